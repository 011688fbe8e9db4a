"""One supervised AMI connection per configured PBX.

The PbxConnection logs in, sends the session settings, reports `ConnectionUp`, asks
`CoreShowChannels` and reports a `ChannelsSnapshot`, then keeps the connection alive with its own
Ping watchdog. Every event and control item goes into ONE queue, in the order it was read. On loss
it reports `ConnectionLost` and reconnects with capped, jittered exponential backoff; wrong
credentials give state `auth_failed`, one log line and slow retries; so does a TLS connection
(`[[pbx]] tls`) whose certificate is not trusted or that finds no TLS: state `tls_failed`.

Actions: `send_action()` and `originate()` raise PbxUnavailable when not logged in, ActionTimeout
when the PBX does not answer in time, ActionFailed on `Response: Error`. An action pending when the
connection drops fails; nothing is ever re-sent (an Originate re-sent is a second call).
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from panoramisk.actions import Action

from pbx_bridge.ami.backoff import backoff_delay
from pbx_bridge.ami.errors import ActionFailed, ActionTimeout, PbxUnavailable
from pbx_bridge.ami.events import AmiEvent, AmiItem, ChannelsSnapshot, ConnectionLost, ConnectionUp
from pbx_bridge.ami.journal import Journal
from pbx_bridge.ami.protocol import BridgeAmiProtocol, BridgeManager, message_to_event
from pbx_bridge.ami.tasks import cancel_and_wait
from pbx_bridge.ami.tls import TlsSetupError, client_context, describe_failure
from pbx_bridge.config import PbxConfig
from pbx_bridge.log import event as log_event

log = logging.getLogger("pbx_bridge.ami.connection")

ConnectionState = Literal["connecting", "connected", "auth_failed", "tls_failed", "disconnected",
                          "stopped"]
FieldValue = str | Sequence[str]
_ERROR_RESPONSES = frozenset({"Error", "Fail", "Failure"})
# How many times a patient action's timeout is renewed while the connection shows it is alive.
PATIENT_ROUNDS = 12


@dataclass(slots=True)
class ActionResponse:
    """Asterisk's answer to an action: the response headers and, for list actions (those that
    answer `EventList: start`), the events of the list up to and including its `...Complete`."""

    headers: dict[str, str]
    events: list[AmiEvent] = field(default_factory=list)

    def get(self, key: str, default: str = "") -> str:
        return self.headers.get(key, default)

    @property
    def message(self) -> str:
        return self.headers.get("Message", "")


class AuthenticationFailed(Exception):
    """The PBX refused our username/secret."""


class TlsFailed(Exception):
    """The TLS handshake failed: an untrusted certificate, or no TLS on that port."""


class SessionLost(Exception):
    """The connection went away (or was closed by the watchdog) after connecting."""


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "closed by the PBX"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class ItemSink(Protocol):
    """The call pipeline's queue as a connection sees it: it only puts AMI items on it (the
    queue also carries other sources' items, which the AMI layer need not know)."""

    def put_nowait(self, item: AmiItem, /) -> None: ...

    async def put(self, item: AmiItem, /) -> None: ...


class PbxConnection:
    def __init__(self, config: PbxConfig, queue: ItemSink, *,
                 clock: Callable[[], float] = time.time,
                 rand: Callable[[], float] = random.random,
                 journal: Journal | None = None) -> None:
        self.config = config
        self.queue = queue
        # Every event read is written here before it is queued (see journal.py).
        self.journal = journal
        self.pbx_name = config.name
        self._clock = clock
        self._rand = rand
        self.state: ConnectionState = "disconnected"
        self.last_error = ""
        self.asterisk_banner = ""
        self.connected_at: float | None = None
        self.events_received = 0
        self.logins = 0
        self._manager: BridgeManager | None = None
        self._protocol: BridgeAmiProtocol | None = None
        self._lost: asyncio.Future[str] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._up = False  # ConnectionUp delivered and no ConnectionLost since
        self._stopping = False
        self._overflow: deque[AmiItem] = deque()
        self._read_pauses = 0  # times reading was paused because the queue was full
        self._drainer: asyncio.Task[None] | None = None
        # A standby (pbx_bridge.standby) stays logged in but passes nothing on: not listening.
        self.listening = True
        self.events_ignored = 0

    # -- ProtocolSink ----------------------------------------------------------------------

    def clock(self) -> float:
        return self._clock()

    def deliver_event(self, event: AmiEvent, text: str) -> None:
        self.events_received += 1
        if not self.listening:
            self.events_ignored += 1
            return
        if self.journal is not None:
            event.seq = self.journal.append(event, text)
        self._deliver(event)

    def end_of_chunk(self) -> None:
        # Written before the event loop can run the pipeline on any of the chunk's events.
        if self.journal is not None:
            self.journal.flush()

    def protocol_lost(self, protocol: BridgeAmiProtocol, exc: BaseException | None) -> None:
        if protocol is self._protocol and self._lost is not None and not self._lost.done():
            self._lost.set_result(_describe(exc))

    # -- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        if self._supervisor is not None and not self._supervisor.done():
            return
        loop = asyncio.get_running_loop()
        # Created inside the running loop (pitfall 12), once; reused for every reconnect.
        self._manager = BridgeManager(host=self.config.host, port=self.config.port, loop=loop,
                                      protocol_factory=lambda: BridgeAmiProtocol(self))
        self.state = "connecting"
        self._stopping = False
        self._supervisor = asyncio.create_task(self._supervise(), name=f"ami:{self.pbx_name}")

    async def stop(self) -> None:
        """Close the connection and cancel any scheduled reconnect (pitfall 10)."""
        self._stopping = True
        task, self._supervisor = self._supervisor, None
        if task is not None:
            await cancel_and_wait(task)
        self._close_protocol()
        if self._manager is not None:
            self._manager.close()
        if self._up:
            self._up = False
            self._deliver(ConnectionLost(self.pbx_name, self._clock(), "stopped"))
        if self._drainer is not None:
            # Events still waiting for room in the queue are in the journal: the next start
            # applies them.
            await cancel_and_wait(self._drainer)
            self._drainer = None
        if self.journal is not None:
            self.journal.close()
        self.state = "stopped"
        log_event(log, logging.INFO, "ami.stopped", pbx=self.pbx_name)

    @property
    def connected(self) -> bool:
        return self.state == "connected"

    # -- standby ---------------------------------------------------------------------------

    def listen(self, journal: Journal | None) -> None:
        """Become the bridge that acts: from now on every event is journaled and queued."""
        self.journal = journal
        self.listening = True

    def deafen(self) -> None:
        """Stand by: stay logged in, pass nothing on, keep no journal."""
        self.listening = False
        self._overflow.clear()
        if self.journal is not None:
            self.journal.close()
            self.journal = None

    async def resync(self) -> None:
        """Begin listening mid-session as after a login: ConnectionUp, then the channels the
        PBX has now (CoreShowChannels) in order with the events that follow."""
        if self.state != "connected":
            return  # the next login does it
        self._up = True
        self._deliver(ConnectionUp(self.pbx_name, self._clock()))
        await self._snapshot(max(self.config.ping_timeout, 2.0))

    # -- actions ---------------------------------------------------------------------------

    async def send_action(self, action: Mapping[str, FieldValue], timeout: float = 5.0,  # noqa: ASYNC109 - the contract
                          ) -> ActionResponse:
        """Send one action and return Asterisk's answer (with the events of a list action)."""
        name = str(action.get("Action", ""))
        if not name:
            raise ValueError("an AMI action needs an 'Action' field")
        if name.lower() == "originate":
            return await self.originate({k: v for k, v in action.items() if k != "Action"}, timeout)
        if name.lower() in ("login", "logoff"):
            raise ValueError(f"{name} is managed by the connection itself")
        self._require_connected()
        return await self._request(action, timeout)

    async def originate(self, fields: Mapping[str, FieldValue], timeout: float = 10.0,  # noqa: ASYNC109
                        ) -> ActionResponse:
        """Queue a call. Always `Async: true` (pitfall 4); never re-sent. `ChannelId` is passed
        through so the originated channel's Uniqueid and the call's Linkedid equal it; the
        `OriginateResponse` event arrives later in the queue like any event."""
        if not fields.get("ChannelId"):
            raise ValueError("Originate needs a ChannelId: it ties the call's events to the request")
        requested_async = str(fields.get("Async", "true")).lower()
        if requested_async != "true":
            raise ValueError("Originate is always sent with Async: true")
        self._require_connected()
        action: dict[str, FieldValue] = {"Action": "Originate"}
        action.update({k: v for k, v in fields.items() if k.lower() not in ("action", "async")})
        action["Async"] = "true"
        # as_list=False: complete on "Originate successfully queued"; panoramisk would otherwise
        # wait for the OriginateResponse (pitfall 5), which the protocol routes to the queue.
        return await self._request(action, timeout, as_list=False)

    def _require_connected(self) -> None:
        if self.state != "connected" or self._protocol is None or self._protocol.closed:
            detail = f": {self.last_error}" if self.last_error else ""
            raise PbxUnavailable(f"PBX {self.pbx_name} is {self.state}{detail}")

    async def _request(self, action: Mapping[str, FieldValue], timeout: float,  # noqa: ASYNC109
                       *,
                       as_list: bool | None = None,
                       on_complete: Callable[[asyncio.Future[Any]], None] | None = None,
                       patient: bool = False,
                       ) -> ActionResponse:
        """`patient`: while the connection shows it is alive (events keep arriving, or we
        paused reading because the pipeline is behind), an answer late by `timeout` is waited
        for again, up to PATIENT_ROUNDS times: it is queued behind those events, not lost."""
        protocol, manager = self._protocol, self._manager
        if protocol is None or manager is None or protocol.closed:
            raise PbxUnavailable(f"PBX {self.pbx_name} is not connected")
        clean: dict[str, str | list[str]] = {}
        for key, value in action.items():
            values = [value] if isinstance(value, str) else list(value)
            for item in [key, *values]:
                if "\r" in item or "\n" in item:
                    raise ValueError(f"AMI field {key!r} contains a line break")
            clean[key] = value if isinstance(value, str) else values
        request = Action(clean, as_list=as_list)
        if on_complete is not None:
            protocol.completion_hooks[request.id] = on_complete
        future = manager.send_action(request, as_list=as_list)
        received, rounds = self.events_received, 0
        while True:
            try:
                result = await asyncio.wait_for(asyncio.shield(future), timeout)
                break
            except TimeoutError:
                alive = bool(self._overflow) or self.events_received != received
                if patient and alive and rounds < PATIENT_ROUNDS and not protocol.closed:
                    rounds, received = rounds + 1, self.events_received
                    continue
                future.cancel()
                protocol.responses.pop(request.id, None)
                protocol.completion_hooks.pop(request.id, None)
                raise ActionTimeout(
                    f"PBX {self.pbx_name}: no answer to {clean.get('Action')} within {timeout:g}s"
                ) from None
        return self._response(result)

    def _response(self, result: Any) -> ActionResponse:
        messages = result if isinstance(result, list) else [result]
        now = self._clock()
        headers = message_to_event(self.pbx_name, messages[0], now).headers
        events = [message_to_event(self.pbx_name, m, now) for m in messages[1:]]
        if headers.get("Response") in _ERROR_RESPONSES:
            raise ActionFailed(headers.get("Message") or f"Response: {headers.get('Response')}")
        return ActionResponse(headers=headers, events=events)

    # -- the queue -------------------------------------------------------------------------

    def _deliver(self, item: AmiItem) -> None:
        """Never raises, never reorders. A bounded queue that is full pauses reading (Asterisk
        will eventually drop us, as it would any slow reader) instead of dropping events."""
        if not self.listening:
            return
        if not self._overflow:
            try:
                self.queue.put_nowait(item)
                return
            except asyncio.QueueFull:
                log_event(log, logging.WARNING, "ami.queue_full", pbx=self.pbx_name)
        self._overflow.append(item)
        protocol = self._protocol
        if protocol is not None and not protocol.closed:
            self._read_pauses += 1
            protocol.transport.pause_reading()
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        while self._overflow:
            await self.queue.put(self._overflow[0])
            self._overflow.popleft()
        protocol = self._protocol
        if protocol is not None and not protocol.closed:
            protocol.transport.resume_reading()

    # -- supervision -----------------------------------------------------------------------

    async def _supervise(self) -> None:
        failures = 0
        while not self._stopping:
            if self.state not in ("auth_failed", "tls_failed"):
                self.state = "connecting"
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except AuthenticationFailed as exc:
                self._close_protocol()
                if self.state != "auth_failed":
                    log_event(log, logging.ERROR, "ami.auth_failed", pbx=self.pbx_name,
                              host=self.config.host, port=self.config.port,
                              username=self.config.username, answer=str(exc),
                              retry_every=self.config.reconnect_max)
                self.state = "auth_failed"
                self.last_error = f"authentication failed: {exc}"
                # Slow retries: someone has to fix the credentials; no fast silent loop (pitfall 9).
                await asyncio.sleep(backoff_delay(0, self.config.reconnect_max,
                                                  self.config.reconnect_max, self._rand()))
                continue
            except TlsFailed as exc:
                self._close_protocol()
                if self.state != "tls_failed" or self.last_error != f"TLS: {exc}":
                    # One line per cause, not per retry: a certificate is fixed by a person.
                    log_event(log, logging.ERROR, "ami.tls_failed", pbx=self.pbx_name,
                              host=self.config.host, port=self.config.port, reason=str(exc),
                              ca_file=self.config.tls_ca_file or "system",
                              retry_every=self.config.reconnect_max)
                self.state = "tls_failed"
                self.last_error = f"TLS: {exc}"
                await asyncio.sleep(backoff_delay(0, self.config.reconnect_max,
                                                  self.config.reconnect_max, self._rand()))
                continue
            except (OSError, TimeoutError, SessionLost, PbxUnavailable, ActionFailed) as exc:
                self.last_error = _describe(exc) if not isinstance(exc, SessionLost) else str(exc)
            except Exception as exc:  # a bug must not end supervision: log it, reconnect
                log.exception("ami.session_error", extra={"kv": {"pbx": self.pbx_name}})
                self.last_error = _describe(exc)
            self._close_protocol()
            if self._up:
                self._up = False
                failures = 0
                self._deliver(ConnectionLost(self.pbx_name, self._clock(), self.last_error))
                log_event(log, logging.WARNING, "ami.connection_lost", pbx=self.pbx_name,
                          reason=self.last_error)
            self.state = "disconnected"
            delay = backoff_delay(failures, self.config.reconnect_min, self.config.reconnect_max,
                                  self._rand())
            failures += 1
            log_event(log, logging.INFO if failures > 1 else logging.WARNING, "ami.reconnect_in",
                      pbx=self.pbx_name, seconds=round(delay, 3), reason=self.last_error)
            await asyncio.sleep(delay)

    async def _session(self) -> None:
        manager = self._manager
        assert manager is not None
        loop = asyncio.get_running_loop()
        self._lost = loop.create_future()
        answer_timeout = max(self.config.ping_timeout, 2.0)  # Asterisk waits 1 s before a refusal
        try:
            # Built per attempt: a CA file replaced on disk is read again at the next try.
            manager.use_tls(client_context(self.config))
        except TlsSetupError as exc:
            raise TlsFailed(str(exc)) from None
        connecting = manager.connect()
        try:
            _transport, protocol = await asyncio.wait_for(connecting, answer_timeout)
        except TimeoutError:
            connecting.cancel()
            raise TimeoutError(f"connect to {self.config.host}:{self.config.port} timed out") from None
        except ssl.SSLError as exc:
            raise TlsFailed(describe_failure(exc)) from None
        self._protocol = protocol

        def logged_in(future: asyncio.Future[Any]) -> None:
            # In the reader, before the events that follow the answer (FullyBooted first).
            if future.cancelled() or future.exception() is not None:
                return
            message = future.result()
            if getattr(message, "response", "") == "Success":
                self._up = True
                self.connected_at = self._clock()
                self._deliver(ConnectionUp(self.pbx_name, self.connected_at))

        try:
            await self._request({"Action": "Login", "Username": self.config.username,
                                 "Secret": self.config.secret, "Events": "on"}, answer_timeout,
                                on_complete=logged_in)
        except ActionFailed as exc:
            raise AuthenticationFailed(str(exc)) from None
        self.asterisk_banner = protocol.version or ""
        # Per-session settings are gone after every reconnect (pitfall 11): send them again.
        try:
            await self._request({"Action": "Events", "EventMask": "on"}, answer_timeout,
                                patient=True)
        except ActionTimeout:
            # manager.conf `broken_events_action = yes` answers nothing to `Events: on`; Login's
            # `Events: on` already did it, and the Ping watchdog will tell a dead connection.
            log_event(log, logging.WARNING, "ami.events_unanswered", pbx=self.pbx_name)
        self.logins += 1
        self.state = "connected"
        self.last_error = ""
        log_event(log, logging.INFO, "ami.connected", pbx=self.pbx_name, host=self.config.host,
                  port=self.config.port, version=self.asterisk_banner, tls=self.config.tls)
        await self._snapshot(answer_timeout)
        await self._keepalive()

    async def _snapshot(self, timeout: float) -> None:  # noqa: ASYNC109
        def deliver(future: asyncio.Future[Any]) -> None:
            # Runs inside the reader, right after CoreShowChannelsComplete: the snapshot lands in
            # the queue exactly where it belongs among the events.
            if future.cancelled() or future.exception() is not None:
                return
            result = future.result()
            if not isinstance(result, list):
                return  # Response: Error (no permission?): no snapshot rather than an empty one
            now = self._clock()
            channels = [message_to_event(self.pbx_name, m, now) for m in result[1:]]
            channels = [c for c in channels if c.name == "CoreShowChannel"]
            self._deliver(ChannelsSnapshot(self.pbx_name, now, channels))

        try:
            await self._request({"Action": "CoreShowChannels"}, timeout * 3, on_complete=deliver,
                                patient=True)
        except ActionFailed as exc:
            log_event(log, logging.ERROR, "ami.snapshot_refused", pbx=self.pbx_name, answer=str(exc))

    async def _keepalive(self) -> None:
        lost = self._lost
        assert lost is not None
        interval, timeout = self.config.ping_interval, self.config.ping_timeout
        while not self._stopping:
            done, _ = await asyncio.wait({lost}, timeout=interval)
            if done:
                raise SessionLost(f"connection lost: {lost.result()}")
            if self._overflow:
                # We paused reading (the pipeline is behind): a Ping's answer would wait behind
                # the bytes we are not reading, and proves nothing about the PBX.
                continue
            pauses = self._read_pauses
            try:
                # Patient: while events keep arriving the answer is only queued behind them. A
                # half-open connection sends nothing at all.
                await self._request({"Action": "Ping"}, timeout, patient=True)
            except ActionTimeout:
                if self._overflow or self._read_pauses != pauses:
                    # We stopped reading ourselves (the pipeline is behind): the answer is
                    # waiting unread behind the backlog; the PBX is not what went quiet.
                    continue
                # Half-open connection (pitfall 6): nobody answers, TCP may never notice.
                log_event(log, logging.WARNING, "ami.ping_timeout", pbx=self.pbx_name,
                          seconds=timeout)
                self._close_protocol(abort=True)
                raise SessionLost(f"no answer to Ping within {timeout:g}s") from None

    def _close_protocol(self, *, abort: bool = False) -> None:
        protocol = self._protocol
        if protocol is None:
            return
        if abort and not protocol.closed:
            protocol.transport.abort()
        protocol.close()
        # Forget it, so that its late connection_lost cannot end the next session.
        self._protocol = None
