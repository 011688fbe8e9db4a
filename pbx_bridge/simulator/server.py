"""A simulated Asterisk AMI server speaking the real protocol, byte-compatible with the traces.

It accepts any number of AMI sessions (each sees every event), checks Login against its
credentials, answers Ping, Events, Logoff, CoreShowChannels (from its CURRENT calls), Originate
(the click-to-call flow of click_to_call.ami, with the request's ChannelId and CALL_ID), Hangup,
MixMonitor / StopMixMonitor (writing a real stereo slin `.raw` file). Calls come from replaying
traces (`replay`) or from the generator (`start_generator`: real traces with fresh ids, numbers
and times). Tests can cut or freeze the client connections at chosen points; the simulator keeps
its calls, so CoreShowChannels after a reconnect shows the live ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import random
import re
import ssl
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pbx_bridge.ami.tasks import cancel_and_wait
from pbx_bridge.simulator.calls import CUSTOMER_NAMES, CallValues, IdCounters, LiveCall, random_customer
from pbx_bridge.simulator.cel_writer import CelWriter, row_from_headers, rows_from_text
from pbx_bridge.simulator.channels import (
    Channel,
    ChannelTable,
    core_show_channel,
    core_show_channels_complete,
)
from pbx_bridge.simulator.outcomes import customer_busy, operator_noanswer
from pbx_bridge.simulator.recording import History, Recorder
from pbx_bridge.simulator.templates import (
    CallTemplate,
    broadcast_events,
    build_template,
    build_template_from_frames,
    driving_actions,
)
from pbx_bridge.simulator.trace import Frame, read_trace
from pbx_bridge.simulator.transfers import variants

log = logging.getLogger("pbx_bridge.simulator")

BANNER = b"Asterisk Call Manager/11.0.0\r\n"
DATA_DIR = Path(__file__).resolve().parent / "data"
# Traces the generator draws from (weights: how often each kind of call happens).
GENERATOR_TRACES = {
    "inbound_answered": 5, "queue_ringall_answered": 2, "inbound_noanswer": 2,
    "inbound_busy": 1, "outbound_answered": 3, "internal_call": 1,
}
# With SimulatorSettings.transfers: SIP calls with an attended and a blind transfer too (their
# operators' channels are PJSIP/1xx: the bridge's operator_channel must match both kinds).
TRANSFER_TRACES = {"sip_attended_transfer": 1, "sip_blind_transfer": 1}
CLICK_TO_CALL_TRACE = "click_to_call"
# The SIP trace with an attended transfer, and the variants made of it (transfers.py): a call
# made from any of the three can take any of the three actions at the point the trace's did.
TRANSFER_TRACE = "sip_attended_transfer"
TRANSFER_VARIANTS = {"Atxfer": TRANSFER_TRACE, "BlindTransfer": "sip_blind_transfer",
                     "Redirect": "sip_redirect"}
# Asterisk drops a session whose output backs up (writetimeout); we drop it past this backlog.
MAX_SESSION_BACKLOG = 16 * 1024 * 1024
# The generator waits while this many calls are still being played (it outruns the renderer
# at high speeds; memory would grow without bound).
MAX_CALLS_IN_PROGRESS = 2000
_TIMESTAMP_LINE = re.compile(rb"^Timestamp: ([0-9.]+)\r$", re.M)
_EXT_IN_CHANNEL = re.compile(r"^[A-Za-z]+/(\d+)")

OriginateOutcome = Literal["answer", "operator_no_answer", "customer_busy"]
AMI_VERSION = "11.0.0"  # manager.h of Asterisk 22
DEFAULT_ORIGINATE_TIMEOUT = 30.0  # Asterisk's, when the Originate has no Timeout


@dataclass(eq=False)
class Session:
    id: int
    writer: asyncio.StreamWriter
    peer: str
    authenticated: bool = False
    events_on: bool = True
    frozen: bool = False  # half-open: the socket stays open, nothing is read or written
    closed: bool = False
    gone: asyncio.Event = field(default_factory=asyncio.Event)

    def write(self, data: bytes) -> None:
        if self.closed or self.frozen:
            return
        transport = self.writer.transport
        if transport.is_closing():
            return
        if transport.get_write_buffer_size() > MAX_SESSION_BACKLOG:
            log.warning("simulator.slow_reader_dropped", extra={"kv": {"session": self.id}})
            self.abort()
            return
        self.writer.write(data)

    def abort(self) -> None:
        self.closed = True
        self.gone.set()
        self.writer.transport.abort()


@dataclass
class ReceivedAction:
    session: int
    headers: list[tuple[str, str]]
    at: float

    def get(self, key: str, default: str = "") -> str:
        for k, v in self.headers:
            if k.lower() == key.lower():
                return v
        return default

    @property
    def name(self) -> str:
        return self.get("Action")


@dataclass
class SimulatorSettings:
    host: str = "127.0.0.1"
    port: int = 0  # 0 = any free port (see .port after start)
    username: str = "bridge"
    secret: str = "simulator"  # noqa: S105 - the demo PBX's own password
    operators: Sequence[str] = ("101", "102", "103")
    traces_dir: Path | None = None  # None = the bundled copies
    spool_dir: Path | None = None  # where MixMonitor writes (relative File -> spool/monitor/)
    system_name: str = "lab"
    auth_fail_delay: float = 1.0  # Asterisk sleeps 1 s before refusing a login
    seed: int | None = None
    speed: float = 1.0  # how fast generated and originated calls play (2 = twice as fast)
    uptime_at_start: int = 100
    # What happens to an Originate: answered (click_to_call.ami), the operator's phone rings out,
    # or the operator answers and the customer's line is busy (see outcomes.py) ...
    originate_outcome: OriginateOutcome = "answer"
    # ... or per operator extension or dialled number (Exten), e.g.
    # {"105": "operator_no_answer", "84951234567": "customer_busy"}.
    originate_outcomes: dict[str, OriginateOutcome] = field(default_factory=dict)
    # Numbers the dialplan has no extension for: Originate answers "Extension does not exist."
    unknown_extensions: frozenset[str] = frozenset()
    # What CoreSettings reports (the traces' Asterisk); an older one makes the bridge record
    # with MixMonitor's r()/t() leg files instead of D.
    asterisk_version: str = "22.10.1"
    # The generator also makes transferred calls (TRANSFER_TRACES); blast() never does.
    transfers: bool = False
    # Write the CEL rows of every call played into this table, as cel_pgsql would ("" = not).
    cel_url: str = ""
    cel_table: str = "cel"
    # Serve AMI over TLS, as Asterisk's manager.conf tlsenable does, with this certificate
    # (PEM, chain first) and key; None = plaintext.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None


class AmiSimulator:
    def __init__(self, settings: SimulatorSettings | None = None, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings or SimulatorSettings()
        self.clock = clock
        self.rng = random.Random(self.settings.seed)
        self.counters = IdCounters()
        self.sessions: list[Session] = []
        # The latest actions received, for tests and debugging (bounded: serve runs for weeks).
        self.actions: deque[ReceivedAction] = deque(maxlen=10_000)
        self.table = ChannelTable(keep_history=True)  # channels of replayed traces
        # Asterisk's clock during a replay: (Timestamp of the last event sent, loop time, speed).
        self._replay_clock: tuple[float, float, float] | None = None
        self.calls: dict[int, LiveCall] = {}  # generated / originated calls being played
        self.events_sent = 0
        self.recorder = Recorder(self.settings.spool_dir)
        self.cel: CelWriter | None = None
        self._server: asyncio.Server | None = None
        self._ids = itertools.count(1)
        self._call_serials = itertools.count(1)
        self._heap: list[tuple[float, int, int]] = []  # (loop time due, call index, version)
        self._wake: asyncio.Event | None = None
        self._player: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._login_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._logins = 0
        self._templates: dict[str, CallTemplate] = {}
        self._started_at = 0.0
        self._running = False
        # Tests: called with every action before it is handled; True = do not handle it.
        self.action_hook: Callable[[Session, ReceivedAction], bool] | None = None

    # -- life cycle ------------------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        tls = self._tls_context()  # first: a bad certificate fails before anything starts
        self._running = True
        self._started_at = self.clock()
        self._wake = asyncio.Event()
        if self.settings.cel_url:
            self.cel = CelWriter(self.settings.cel_url, self.settings.cel_table)
            await self.cel.start()
        self._server = await asyncio.start_server(self._serve, self.settings.host,
                                                  self.settings.port, limit=1024 * 1024,
                                                  ssl=tls)
        self._player = asyncio.create_task(self._play(), name="simulator-player")
        log.info("simulator.listening", extra={"kv": {"host": self.settings.host, "port": self.port,
                                                       "tls": self.settings.tls_cert_file is not None}})

    def _tls_context(self) -> ssl.SSLContext | None:
        if self.settings.tls_cert_file is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.settings.tls_cert_file, self.settings.tls_key_file)
        return context

    async def stop(self) -> None:
        self._running = False
        tasks = [t for t in (self._player, *self._tasks) if t is not None]
        for task in tasks:
            await cancel_and_wait(task)
        self._tasks.clear()
        log.debug("simulator.tasks_stopped")
        for session in list(self.sessions):
            session.abort()
        if self._server is not None:
            self._server.close()
            # Bounded: on some Pythons wait_closed waits for every connection handler.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 5)
        self.recorder.finish_all(self.clock())
        if self.cel is not None:
            await self.cel.stop()
        log.info("simulator.stopped")

    async def __aenter__(self) -> AmiSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def template(self, name: str) -> CallTemplate:
        if name not in self._templates:
            folder = Path(self.settings.traces_dir or DATA_DIR)
            if name in TRANSFER_VARIANTS.values():
                self._transfer_templates(folder)
            else:
                self._templates[name] = build_template(folder / f"{name}.ami", name)
        return self._templates[name]

    def _transfer_templates(self, folder: Path) -> None:
        """The attended-transfer trace and its blind-transfer and Redirect variants, on the same
        slots (so a call switches from one to the other at the action)."""
        frames = read_trace(folder / f"{TRANSFER_TRACE}.ami")
        events, actions = broadcast_events(frames), driving_actions(frames)
        attended = build_template_from_frames(events, TRANSFER_TRACE, actions=actions)
        self._templates[TRANSFER_TRACE] = attended
        for action, variant in variants(events, actions).items():
            name = TRANSFER_VARIANTS[action]
            self._templates[name] = build_template_from_frames(
                variant.frames, name, actions=variant.actions, base=attended)

    # -- test controls ---------------------------------------------------------------------

    @property
    def logged_in(self) -> list[Session]:
        return [s for s in self.sessions if s.authenticated and not s.closed]

    async def wait_logins(self, count: int, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Until `count` logins have happened since start (not: are connected now)."""
        if self._logins >= count:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._login_waiters.append((count, future))
        await asyncio.wait_for(future, timeout)

    def drop_clients(self) -> int:
        """Cut every client connection now (TCP reset); calls go on."""
        sessions = [s for s in self.sessions if not s.closed]
        for session in sessions:
            session.abort()
        return len(sessions)

    def freeze_clients(self) -> int:
        """Half-open: keep every client socket open but stop reading and answering."""
        sessions = [s for s in self.sessions if not s.closed and not s.frozen]
        for session in sessions:
            session.frozen = True
            transport = session.writer.transport
            if isinstance(transport, asyncio.ReadTransport):
                transport.pause_reading()
        return len(sessions)

    def send_raw(self, data: bytes) -> None:
        """Write bytes as they are to every logged-in client (tests: junk on the wire)."""
        for session in self.logged_in:
            session.write(data)

    # -- the wire --------------------------------------------------------------------------

    def broadcast(self, data: bytes) -> None:
        for session in self.sessions:
            if session.authenticated and session.events_on:
                session.write(data)

    async def drain(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Wait until clients took what was written (full-speed modes); drop one stuck longer.
        Always yields to the loop once, so a producer with a backlog cannot starve the rest."""
        await asyncio.sleep(0)
        for session in list(self.sessions):
            if session.closed or session.frozen or not session.authenticated:
                continue
            try:
                await asyncio.wait_for(session.writer.drain(), timeout)
            except (TimeoutError, ConnectionError):
                session.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        session = Session(next(self._ids), writer, f"{peer[0]}:{peer[1]}" if peer else "?")
        self.sessions.append(session)
        writer.write(BANNER)
        try:
            while not session.closed:
                block = await reader.readuntil(b"\r\n\r\n")
                if session.frozen:
                    await session.gone.wait()  # never answers again; the socket stays open
                    break
                headers = _parse_action(block)
                if headers:
                    await self._dispatch(session, ReceivedAction(session.id, headers, self.clock()))
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("simulator.session_error")
        finally:
            session.closed = True
            if session in self.sessions:
                self.sessions.remove(session)
            if not writer.transport.is_closing():
                writer.close()

    # -- actions ---------------------------------------------------------------------------

    async def _dispatch(self, session: Session, action: ReceivedAction) -> None:
        self.actions.append(action)
        if self.action_hook is not None and self.action_hook(session, action):
            return  # the test took it over (e.g. cut the connection instead of answering)
        name = action.name.lower()
        if name == "login":
            await self._login(session, action)
            return
        if not session.authenticated:
            session.write(_response(action, "Error", "Authentication Required"))
            return
        handler = {
            "ping": self._ping, "events": self._events, "logoff": self._logoff,
            "coreshowchannels": self._core_show_channels, "originate": self._originate,
            "hangup": self._hangup, "mixmonitor": self._mixmonitor,
            "stopmixmonitor": self._stop_mixmonitor, "coresettings": self._core_settings,
            "atxfer": self._atxfer, "blindtransfer": self._blind_transfer,
            "redirect": self._redirect,
        }.get(name)
        if handler is None:
            session.write(_response(action, "Error", "Invalid/unknown command"))
            return
        handler(session, action)

    async def _login(self, session: Session, action: ReceivedAction) -> None:
        ok = (action.get("Username") == self.settings.username
              and action.get("Secret") == self.settings.secret)
        if not ok:
            await asyncio.sleep(self.settings.auth_fail_delay)
            session.write(_response(action, "Error", "Authentication failed"))
            session.closed = True
            session.writer.close()
            return
        session.write(_response(action, "Success", "Authentication accepted"))
        session.events_on = action.get("Events", "on").lower() != "off"
        session.authenticated = True
        uptime = self.settings.uptime_at_start + int(self.clock() - self._started_at)
        session.write((
            "Event: FullyBooted\r\nPrivilege: system,all\r\n"
            f"Uptime: {uptime}\r\nLastReload: {uptime}\r\nStatus: Fully Booted\r\n\r\n"
        ).encode())
        self._logins += 1
        for count, future in list(self._login_waiters):
            if self._logins >= count and not future.done():
                future.set_result(None)
                self._login_waiters.remove((count, future))

    def _ping(self, session: Session, action: ReceivedAction) -> None:
        now = self.clock()
        session.write(_lines("Response: Success", _aid(action), "Ping: Pong",
                             f"Timestamp: {int(now)}.{int((now % 1) * 1e6):06d}"))

    def _events(self, session: Session, action: ReceivedAction) -> None:
        mask = action.get("EventMask", "on").lower()
        session.events_on = mask not in ("off", "0", "no", "false")
        session.write(_lines("Response: Success", _aid(action),
                             "Events: On" if session.events_on else "Events: Off"))

    def _logoff(self, session: Session, action: ReceivedAction) -> None:
        session.write(_response(action, "Goodbye", "Thanks for all the fish."))
        session.closed = True
        session.writer.close()

    def live_channels(self) -> list[Channel]:
        channels = list(self.table.channels.values())
        for call in self.calls.values():
            channels.extend(call.channels())
        return channels

    def _core_show_channels(self, session: Session, action: ReceivedAction) -> None:
        aid = action.get("ActionID")
        now = self.clock()
        channels = self.live_channels()
        parts = [_response(action, "Success", "Channels will follow", eventlist=True).decode()]
        parts += [core_show_channel(ch, aid, now) for ch in channels]
        parts.append(core_show_channels_complete(aid, len(channels)))
        session.write("".join(parts).encode())

    def _find_channel(self, name: str) -> Channel | None:
        return next((ch for ch in self.live_channels() if ch.fields.get("Channel") == name), None)

    def _originate(self, session: Session, action: ReceivedAction) -> None:
        channel = action.get("Channel")
        if not channel:
            session.write(_response(action, "Error", "Channel not specified"))
            return
        if action.get("Async").lower() not in ("true", "yes", "1", "on"):
            # A synchronous Originate blocks the session until the call is answered; the bridge
            # never does that (pitfall 4), so neither does the simulator.
            session.write(_response(action, "Error", "Only Async Originate is simulated"))
            return
        found = _EXT_IN_CHANNEL.match(channel)
        exten = action.get("Exten")
        if exten in self.settings.unknown_extensions or (not exten and not action.get("Application")):
            # manager.c action_originate checks the dialplan before queueing the call.
            session.write(_response(action, "Error", "Extension does not exist."))
            return
        if not found or not exten:
            # Asterisk queues it; the simulator plays only an operator's phone calling a number
            # (click-to-call). Anything else fails as a channel that could not be created.
            session.write(_response(action, "Success", "Originate successfully queued"))
            log.warning("simulator.originate_not_modelled", extra={"kv": {"channel": channel}})
            self.broadcast(_originate_failure(action, self.clock(), self.settings.system_name))
            return
        variables: dict[str, str] = {}
        for key, value in action.headers:
            if key.lower() == "variable":
                for item in value.split(","):
                    var, _, val = item.partition("=")
                    variables[var.lstrip("_")] = val
        customer = _customer_e164(exten)
        session.write(_response(action, "Success", "Originate successfully queued"))
        values = CallValues(customer=customer, operators=[found.group(1)],
                            call_id=variables.get("CALL_ID", ""),
                            channel_id=action.get("ChannelId"),
                            action_id=action.get("ActionID"))
        try:
            ring = float(action.get("Timeout") or 0) / 1000 or DEFAULT_ORIGINATE_TIMEOUT
        except ValueError:
            ring = DEFAULT_ORIGINATE_TIMEOUT
        outcomes = self.settings.originate_outcomes
        outcome = (outcomes.get(found.group(1)) or outcomes.get(exten or "")
                   or self.settings.originate_outcome)
        call = self.add_call(self.originate_template(outcome, ring), values)
        call.values.update(requested_channel=channel, requested_exten=exten,
                           requested_context=action.get("Context"))

    def originate_template(self, outcome: OriginateOutcome, ring_seconds: float) -> CallTemplate:
        key = f"{outcome}:{ring_seconds:g}" if outcome != "answer" else CLICK_TO_CALL_TRACE
        if key not in self._templates:
            folder = Path(self.settings.traces_dir or DATA_DIR)
            c2c = broadcast_events(read_trace(folder / f"{CLICK_TO_CALL_TRACE}.ami"))
            if outcome == "answer":
                frames = c2c
            elif outcome == "customer_busy":
                frames = customer_busy(c2c, broadcast_events(read_trace(folder / "inbound_busy.ami")))
            else:  # operator_no_answer
                frames = operator_noanswer(
                    c2c, broadcast_events(read_trace(folder / "inbound_noanswer.ami")), ring_seconds)
            template = build_template_from_frames(frames, key)
            for event in template.events:
                if event.name == "OriginateResponse":
                    # Asterisk echoes the request's Context and Exten, and on failure the Channel
                    # as requested (no channel came up).
                    fields = ["Context", "Exten"] + (["Channel"] if "Response: Failure" in event.fmt
                                                     else [])
                    for field in fields:
                        event.fmt = re.sub(rf"(?m)^{field}: [^\r\n]*",
                                           f"{field}: {{requested_{field.lower()}}}", event.fmt)
            self._templates[key] = template
        return self._templates[key]

    def _hangup(self, session: Session, action: ReceivedAction) -> None:
        name = action.get("Channel")
        if not name:
            session.write(_response(action, "Error", "No channel specified"))
            return
        for index, call in self.calls.items():
            if call.has_channel(name):
                session.write(_response(action, "Success", "Channel Hungup"))
                if not self._resume(index, call, action, name):
                    if call.skip_to_hangup(self._call_now(call)):
                        self._schedule(index, call)
                return
        if any(ch.fields.get("Channel") == name for ch in self.table.channels.values()):
            # A replayed trace's channel: the trace's own events hang it up.
            session.write(_response(action, "Success", "Channel Hungup"))
            return
        session.write(_response(action, "Error", "No such channel"))

    # -- transfers (see transfers.py and the attended-transfer trace) --------------------------

    def _call_of(self, channel: str) -> tuple[int, LiveCall] | None:
        return next(((i, c) for i, c in self.calls.items() if c.has_channel(channel)), None)

    def _call_now(self, call: LiveCall) -> float:
        """Asterisk's clock for a playing call (at full speed: the time of its last event)."""
        if self.settings.speed <= 0:
            return call.start + call.offset(max(0, min(call.index, len(call.template.events)) - 1))
        return call.now(asyncio.get_running_loop().time(), self.settings.speed)

    def _resume(self, index: int, call: LiveCall, action: ReceivedAction, channel: str) -> bool:
        """The client's action that the call waits for (or a variant of it): the call goes on
        from now with the trace's events. False if the call waits for no such action."""
        pause = call.pause
        if pause is None:
            return False
        name = action.name.lower()
        template = call.template
        if pause.action.lower() != name:
            wanted = next((t for a, t in TRANSFER_VARIANTS.items() if a.lower() == name), None)
            if wanted is None or call.template.name not in TRANSFER_VARIANTS.values():
                return False
            template = self.template(wanted)
            pause = next((p for p in template.pauses if p.index == call.index), None)
            if pause is None:
                return False
        if call.fill(pause.channel) != channel:
            return False
        exten = action.get("Exten")
        target = dict(pause.fields).get("Exten", "")
        if exten and target.startswith("{op") and target.endswith("}") and exten.isdigit():
            call.values[target[1:-1]] = exten  # transferred to this extension
        if template is not call.template:
            call.switch(template, CallValues(operators=list(self.settings.operators)),
                        self.counters, self.settings.system_name)
        call.move_from(call.index, self._call_now(call))
        call.version += 1
        due = call.loop_start + call.next_offset() / self._speed
        heapq.heappush(self._heap, (due, index, call.version))
        if self._wake is not None:
            self._wake.set()
        return True

    def _transfer_target(self, session: Session, action: ReceivedAction) -> str | None:
        """Asterisk's own errors for Atxfer and BlindTransfer; the channel, or None."""
        for header, message in (("Channel", "No channel specified"),
                                ("Exten", "No extension specified")):
            if not action.get(header):
                session.write(_response(action, "Error", message))
                return None
        channel = action.get("Channel")
        if self._find_channel(channel) is None:
            session.write(_response(action, "Error", "Channel specified does not exist"))
            return None
        return channel

    def _atxfer(self, session: Session, action: ReceivedAction) -> None:
        """manager.c action_atxfer: queues the feature code as DTMF and answers at once; on a
        call that allows no transfer (no `t` in its Dial) the digits do nothing."""
        channel = self._transfer_target(session, action)
        if channel is None:
            return
        session.write(_response(action, "Success", "Atxfer successfully queued"))
        found = self._call_of(channel)
        if found is not None:
            self._resume(*found, action, channel)

    def _blind_transfer(self, session: Session, action: ReceivedAction) -> None:
        """manager.c action_blind_transfer -> ast_bridge_transfer_blind."""
        channel = self._transfer_target(session, action)
        if channel is None:
            return
        found = self._call_of(channel)
        bridged = any(ch.bridge_id for ch in self.live_channels() if ch.fields.get("Channel") == channel)
        if not bridged:
            session.write(_response(action, "Error", "Transfer invalid"))
            return
        if found is not None and self._resume(*found, action, channel):
            session.write(_response(action, "Success", "Transfer succeeded"))
            return
        log.warning("simulator.transfer_not_modelled", extra={"kv": {"channel": channel}})
        session.write(_response(action, "Error", "Transfer failed"))

    def _redirect(self, session: Session, action: ReceivedAction) -> None:
        """manager.c action_redirect (one channel; the dual redirect is not modelled)."""
        for header, message in (("Channel", "Channel not specified"),
                                ("Context", "Context not specified"),
                                ("Exten", "Exten not specified"),
                                ("Priority", "Priority not specified")):
            if not action.get(header):
                session.write(_response(action, "Error", message))
                return
        if not action.get("Priority").isdigit() or int(action.get("Priority")) < 1:
            session.write(_response(action, "Error", "Priority is invalid"))
            return
        channel = action.get("Channel")
        if self._find_channel(channel) is None:
            session.write(_response(action, "Error", f"Channel does not exist: {channel}"))
            return
        found = self._call_of(channel)
        if found is not None and not action.get("ExtraChannel") and self._resume(*found, action, channel):
            session.write(_response(action, "Success", "Redirect successful"))
            return
        log.warning("simulator.redirect_not_modelled", extra={"kv": {"channel": channel}})
        session.write(_response(action, "Error", "Redirect failed"))

    def _core_settings(self, session: Session, action: ReceivedAction) -> None:
        """manager.c action_coresettings, with the lab's asterisk.conf (no runuser, no limits,
        CDR on, no HTTP)."""
        session.write(_lines(
            "Response: Success", _aid(action), f"AMIversion: {AMI_VERSION}",
            f"AsteriskVersion: {self.settings.asterisk_version}",
            f"SystemName: {self.settings.system_name}", "CoreMaxCalls: 0",
            "CoreMaxLoadAvg: 0.000000", "CoreRunUser: ", "CoreRunGroup: ",
            "CoreMaxFilehandles: 0", "CoreRealTimeEnabled: No", "CoreCDRenabled: Yes",
            "CoreHTTPenabled: No", "SoundsSearchCustomDir: No"))

    def _audio_source(self, channel: str) -> tuple[Callable[[], float], Callable[[], History],
                                                   Callable[[], float | None]] | None:
        """For a live channel: Asterisk's clock for it, its call's audio history, and when (if
        yet) the events hung it up."""
        found = self._call_of(channel)
        if found is not None:
            call = found[1]
            return (lambda: self._call_now(call)), call.history, (lambda: call.gone_at(channel))
        if channel in {ch.fields.get("Channel") for ch in self.table.channels.values()}:
            history = self.table.history or []

            def gone() -> float | None:
                live = {ch.fields.get("Channel") for ch in self.table.channels.values()}
                if channel in live:
                    return None
                return next((at for at, states in reversed(history) if channel not in states),
                            self._replay_now())

            return self._replay_now, (lambda: list(history)), gone
        return None

    def _replay_now(self) -> float:
        if self._replay_clock is None:
            return self.clock()
        stamp, at, speed = self._replay_clock
        if speed <= 0:
            return stamp
        return stamp + (asyncio.get_running_loop().time() - at) * speed

    def _mixmonitor(self, session: Session, action: ReceivedAction) -> None:
        # Answers as app_mixmonitor.c's manager_mixmonitor: `MixMonitorID` only with option
        # i(VAR), errors "No channel specified" / "No such channel" / "Could not start ...".
        name = action.get("Channel")
        if not name:
            session.write(_response(action, "Error", "No channel specified"))
            return
        channel = self._find_channel(name)
        source = self._audio_source(name)
        if channel is None or source is None:
            session.write(_response(action, "Error", "No such channel"))
            return
        now_of, history, gone_at = source
        options = action.get("Options")
        file_name = action.get("File") or f"{channel.fields.get('Uniqueid', 'mixmonitor')}.wav"
        id_var = re.search(r"i\(([^)]*)\)", options)
        monitor_id = f"0x{self.rng.getrandbits(48):012x}" if id_var else ""
        now = now_of()
        try:
            path = self.recorder.start(name, file_name, options, now, history, monitor_id)
        except ValueError as exc:
            log.warning("simulator.mixmonitor_refused", extra={"kv": {"reason": str(exc)}})
            session.write(_response(action, "Error", "Could not start monitoring channel"))
            return
        session.write(_lines("Response: Success", _aid(action),
                             f"MixMonitorID: {monitor_id}" if monitor_id else ""))
        if id_var:
            self.broadcast(_channel_event("VarSet", channel, now, self.settings.system_name,
                                          [("Variable", id_var.group(1)), ("Value", monitor_id)]))
        self.broadcast(_channel_event("VarSet", channel, now, self.settings.system_name,
                                      [("Variable", "MIXMONITOR_FILENAME"), ("Value", str(path))]))
        self.broadcast(_channel_event("MixMonitorStart", channel, now, self.settings.system_name,
                                      [], short=True))
        self._spawn(self._watch_recording(name, gone_at))

    def _stop_mixmonitor(self, session: Session, action: ReceivedAction) -> None:
        name = action.get("Channel")
        if not name:
            session.write(_response(action, "Error", "No channel specified"))
            return
        channel = self._find_channel(name)
        source = self._audio_source(name)
        if channel is None or source is None:
            session.write(_response(action, "Error", "No such channel"))
            return
        now = source[0]()
        if not self.recorder.stop(name, now, action.get("MixMonitorID")):
            session.write(_response(action, "Error", "Could not stop monitoring channel"))
            return
        session.write(_lines("Response: Success", _aid(action)))
        self.broadcast(_channel_event("MixMonitorStop", channel, now,
                                      self.settings.system_name, [], short=True))

    async def _watch_recording(self, channel_name: str, gone_at: Callable[[], float | None]) -> None:
        """Asterisk closes the file when the channel hangs up: at its Hangup's time."""
        while self.recorder.active(channel_name):
            ended = gone_at()
            if ended is not None:
                self.recorder.stop(channel_name, ended)
                return
            await asyncio.sleep(0.01)

    def _spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- playing calls ---------------------------------------------------------------------

    def add_call(self, template: CallTemplate, values: CallValues, *,
                 interactive: bool = False) -> LiveCall:
        """Play a call. `interactive`: it waits at its template's pauses for the client's action
        (Atxfer, BlindTransfer, Redirect, Hangup); otherwise it goes on as the trace did, as if
        the phone had done it."""
        now = self.clock()
        call = LiveCall.create(template, values, self.counters, self.rng, now,
                               self.settings.system_name)
        call.interactive = interactive
        index = next(self._call_serials)
        call.serial = index
        call.loop_start = asyncio.get_running_loop().time()
        self.calls[index] = call
        self._schedule(index, call)
        return call

    @property
    def _speed(self) -> float:
        return self.settings.speed if self.settings.speed > 0 else 1e9

    def _schedule(self, index: int, call: LiveCall) -> None:
        call.version += 1
        if call.pause is not None:
            return  # waits for its client's action (the call stays, and its channels)
        due = call.loop_start + call.next_offset() / self._speed
        heapq.heappush(self._heap, (due, index, call.version))
        if self._wake is not None:
            self._wake.set()

    async def _play(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wake is not None
        while self._running:
            if not self._heap:
                self._wake.clear()
                await self._wake.wait()
                continue
            delay = self._heap[0][0] - loop.time()
            if delay > 0:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), delay)
                except TimeoutError:
                    pass
                continue
            batch: list[str] = []
            now = loop.time()
            while self._heap and self._heap[0][0] <= now and len(batch) < 512:
                _due, index, version = heapq.heappop(self._heap)
                call = self.calls.get(index)
                if call is None or call.version != version or call.done:
                    continue
                batch.append(call.render_next())
                if call.done:
                    del self.calls[index]
                else:
                    self._schedule(index, call)
            if batch:
                # Nothing is awaited between rendering and writing: CoreShowChannels (answered
                # between awaits) always matches the events already on the wire.
                self.events_sent += len(batch)
                text = "".join(batch)
                if self.cel is not None:
                    self.cel.offer(rows_from_text(text))
                self.broadcast(text.encode())
                await self.drain()

    # -- traffic ---------------------------------------------------------------------------

    def start_generator(self, calls_per_second: float, *, max_calls: int | None = None) -> None:
        """Endless realistic traffic (or `max_calls` calls) from the real traces."""
        self._spawn(self._generate(calls_per_second, max_calls))

    def new_call_values(self, template: CallTemplate) -> CallValues:
        ops = list(self.settings.operators)
        wanted = len(template.operators)
        picked = self.rng.sample(ops, wanted) if len(ops) >= wanted else \
            [self.rng.choice(ops) for _ in range(wanted)]
        customer = random_customer(self.rng) if template.customer else ""
        name = self.rng.choice(CUSTOMER_NAMES) if "cname" in template.slots else ""
        return CallValues(customer=customer, customer_name=name, operators=picked)

    async def _generate(self, calls_per_second: float, max_calls: int | None) -> None:
        mix = {**GENERATOR_TRACES, **(TRANSFER_TRACES if self.settings.transfers else {})}
        names = list(mix)
        weights = [mix[n] for n in names]
        count = 0
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while self._running and (max_calls is None or count < max_calls):
            template = self.template(self.rng.choices(names, weights)[0])
            self.add_call(template, self.new_call_values(template))
            count += 1
            speed = self.settings.speed
            while len(self.calls) > MAX_CALLS_IN_PROGRESS:  # noqa: ASYNC110 - renderer behind
                await asyncio.sleep(0.01)
            # Poisson arrivals on an absolute schedule: a late wake-up (busy loop, coarse timer)
            # is made up by the next gaps, so the long-run rate is the one asked for. Speed 0 =
            # as fast as possible (still yielding to the loop).
            if speed > 0:
                next_at = max(next_at + self.rng.expovariate(calls_per_second) / speed,
                              loop.time() - 1.0)  # after a stall, no burst of more than 1 s
                await asyncio.sleep(max(0.0, next_at - loop.time()))
            else:
                await asyncio.sleep(0)

    async def blast(self, calls: int, *, concurrent: int = 50, batch_events: int = 1024) -> int:
        """As fast as possible: `calls` generated calls, `concurrent` at a time interleaved, with
        their own (virtual) time in the Timestamps. For throughput benchmarks. Returns events."""
        names = list(GENERATOR_TRACES)
        weights = [GENERATOR_TRACES[n] for n in names]
        vnow = self.clock()
        heap: list[tuple[float, int, LiveCall]] = []
        started = sent = 0
        batch: list[str] = []
        while started < calls or heap:
            while started < calls and len(heap) < concurrent:
                template = self.template(self.rng.choices(names, weights)[0])
                call = LiveCall.create(template, self.new_call_values(template), self.counters,
                                       self.rng, vnow, self.settings.system_name)
                heapq.heappush(heap, (call.start + call.next_offset(), started, call))
                started += 1
                vnow += 0.05
            _due, serial, call = heapq.heappop(heap)
            batch.append(call.render_next())
            if not call.done:
                heapq.heappush(heap, (call.start + call.next_offset(), serial, call))
            if len(batch) >= batch_events:
                sent += len(batch)
                self.broadcast("".join(batch).encode())
                batch.clear()
                await self.drain()
        if batch:
            sent += len(batch)
            self.broadcast("".join(batch).encode())
            await self.drain()
        self.events_sent += sent
        return sent

    async def replay(self, traces: Iterable[Path | str | list[Frame]], *, speed: float = 1.0,
                     now_timestamps: bool = False, cut_after: Iterable[int] = (),
                     freeze_after: Iterable[int] = (), shift: float | None = None) -> int:
        """Play the traces' broadcast events to every client, with the original timing divided
        by `speed` (0 = as fast as possible). `cut_after`/`freeze_after`: event numbers (0-based,
        over all traces) after which client connections are cut / frozen. `shift`: seconds added
        to every Timestamp (a trace played in parts keeps one clock). Returns events sent."""
        cuts, freezes = set(cut_after), set(freeze_after)
        loop = asyncio.get_running_loop()
        number = 0
        for trace in traces:
            frames = trace if isinstance(trace, list) else read_trace(trace)
            self._seed_from_list(frames)
            events = broadcast_events(frames)
            stamps = [f.timestamp for f in events if f.timestamp is not None]
            t0 = stamps[0] if stamps else 0.0
            moved = shift if shift is not None else (
                (self.clock() - t0) if now_timestamps and stamps else 0.0)
            start = loop.time()
            for frame in events:
                ts = frame.timestamp
                if speed > 0 and ts is not None:
                    delay = start + (ts - t0) / speed - loop.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                data = frame.raw
                if moved:
                    data = _shift_timestamp(data, moved)
                stamp = (ts + moved) if ts is not None else self._replay_now()
                self.table.apply(frame.headers, self.clock(), stamp)
                self._replay_clock = (stamp, loop.time(), speed)
                if self.cel is not None and frame.name == "CEL":
                    row = row_from_headers(frame.headers, moved)
                    if row is not None:
                        self.cel.offer([row])
                self.broadcast(data)
                self.events_sent += 1
                if number in cuts:
                    self.drop_clients()
                if number in freezes:
                    self.freeze_clients()
                number += 1
                if speed == 0 and number % 256 == 0:
                    await self.drain()
            await self.drain()
        return number

    def _seed_from_list(self, frames: list[Frame]) -> None:
        """A trace that begins mid-call knows its first channels only from CoreShowChannel."""
        now = self.clock()
        for frame in frames:
            if frame.kind == "event" and frame.timestamp is not None:
                break
            if frame.kind == "event" and frame.name == "CoreShowChannel":
                self.table.seed(frame.headers, now)


# -- formatting helpers ------------------------------------------------------------------------


def _parse_action(block: bytes) -> list[tuple[str, str]]:
    headers = []
    for line in block.decode("utf-8", "replace").replace("\r\n", "\n").split("\n"):
        key, sep, value = line.partition(":")
        if sep and key.strip():
            headers.append((key.strip(), value.strip()))
    return headers


def _aid(action: ReceivedAction) -> str:
    aid = action.get("ActionID")
    return f"ActionID: {aid}" if aid else ""


def _lines(*lines: str) -> bytes:
    return ("\r\n".join(line for line in lines if line) + "\r\n\r\n").encode()


def _response(action: ReceivedAction, status: str, message: str, *, eventlist: bool = False) -> bytes:
    return _lines(f"Response: {status}", _aid(action), "EventList: start" if eventlist else "",
                  f"Message: {message}")


_SHORT_FIELDS = ("Channel", "ChannelState", "ChannelStateDesc", "CallerIDNum", "CallerIDName",
                 "ConnectedLineNum", "ConnectedLineName", "Language", "AccountCode")
_FULL_FIELDS = (*_SHORT_FIELDS, "Context", "Exten", "Priority", "Uniqueid", "Linkedid")


def _channel_event(name: str, channel: Channel, now: float, system_name: str,
                   extra: list[tuple[str, str]], *, short: bool = False) -> bytes:
    """A channel event in Asterisk 22's layout. MixMonitorStart/Stop, as in the trace, carry the
    short snapshot plus Application/AppData."""
    lines = [f"Event: {name}", "Privilege: dialplan,all" if name == "VarSet" else "Privilege: call,all",
             f"Timestamp: {now:.6f}", f"SystemName: {system_name}"]
    for key in (_SHORT_FIELDS if short else _FULL_FIELDS):
        lines.append(f"{key}: {channel.fields.get(key, '')}")
    if short:
        lines += [f"Application: {channel.application}", f"AppData: {channel.application_data}"]
    else:
        lines += [f"ChanVariable: {v}" for v in channel.variables]
    lines += [f"{k}: {v}" for k, v in extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _originate_failure(action: ReceivedAction, now: float, system_name: str) -> bytes:
    """OriginateResponse of a call whose channel never came up (Reason 0), as manager.c's
    fast_originate reports it (no channel: the requested one, and the request's ChannelId)."""
    caller = action.get("CallerID")
    number = caller[caller.find("<") + 1: caller.find(">")] if "<" in caller else ""
    if action.get("Application"):
        target = [f"Application: {action.get('Application')}", f"Data: {action.get('Data')}"]
    else:
        target = [f"Context: {action.get('Context')}", f"Exten: {action.get('Exten')}"]
    lines = ["Event: OriginateResponse", "Privilege: call,all", f"Timestamp: {now:.6f}",
             f"SystemName: {system_name}", _aid(action), "Response: Failure",
             f"Channel: {action.get('Channel')}", *target, "Reason: 0",
             f"Uniqueid: {action.get('ChannelId') or '<unknown>'}",
             f"CallerIDNum: {number or '<unknown>'}", "CallerIDName: <unknown>"]
    return ("\r\n".join(line for line in lines if line) + "\r\n\r\n").encode()


def _shift_timestamp(data: bytes, shift: float) -> bytes:
    return _TIMESTAMP_LINE.sub(lambda m: b"Timestamp: %.6f\r" % (float(m.group(1)) + shift), data)


def _customer_e164(exten: str) -> str:
    digits = exten.lstrip("+")
    if len(digits) == 11 and digits[0] in "78":
        return "+7" + digits[1:]
    return "+" + digits if digits.isdigit() else exten
