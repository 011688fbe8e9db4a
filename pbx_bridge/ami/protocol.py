"""panoramisk 1.4's AMI protocol and Manager with the workarounds the bridge needs.

What is changed, and why (numbers refer to shared/notes/ami.md):

- Bytes are buffered and only complete messages (ended by a blank line) are decoded, so a UTF-8
  character split across two TCP reads is kept (pitfall 3). Invalid UTF-8 becomes U+FFFD instead
  of vanishing; lines that are not `Key: value` are skipped; a line longer than
  MAX_PENDING_BYTES is dropped and the reader resynchronises at the next line end.
- Events are never dispatched to panoramisk handlers: each one goes, parsed into an AmiEvent, to
  one synchronous sink in arrival order (pitfalls 1 and 2). Only action answers (responses, and
  the list events that carry a pending action's ActionID) go through panoramisk's
  `handle_message`, which collects list answers until their `...Complete` event.
- `OriginateResponse` always reaches the sink as an event, even though it carries the Originate's
  ActionID (pitfall 5).
- Actions pending when the connection closes fail at once with PbxUnavailable; panoramisk's
  "re-send after FullyBooted" list is never filled (pitfall 7).
- The Manager never schedules reconnects or pings of its own: the connection supervisor does
  (pitfalls 6, 9, 10).

Header handling: `headers` holds every header except `Event` and the variable lines, last value
wins. `ChanVariable: NAME=value` (and `ChanVariable(<channel>): NAME=value` in
OriginateResponse) go to `variables`. Variables of the other channels of an event
(`DestChanVariable`, `LocalOneChanVariable`, ...) go to `headers` as `DestChanVariable.NAME`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import Any, Protocol

from panoramisk.ami_protocol import AMIProtocol
from panoramisk.manager import Manager
from panoramisk.message import Message

from pbx_bridge.ami.errors import PbxUnavailable
from pbx_bridge.ami.events import AmiEvent

log = logging.getLogger("pbx_bridge.ami.protocol")

# An AMI message is a few kB; anything this long without a line end is junk on the wire.
MAX_PENDING_BYTES = 256 * 1024
BANNER_PREFIX = b"Asterisk Call Manager/"
_TERMINATOR = b"\r\n\r\n"


class ProtocolSink(Protocol):
    """What the protocol reports to (the PbxConnection)."""

    pbx_name: str

    def clock(self) -> float: ...

    def deliver_event(self, event: AmiEvent, text: str) -> None:
        """A live event, in arrival order, with the message text it was parsed from."""

    def end_of_chunk(self) -> None:
        """Called after each TCP read has been delivered (the journal writes here)."""

    def protocol_lost(self, protocol: BridgeAmiProtocol, exc: BaseException | None) -> None: ...


def parse_headers(text: str) -> list[tuple[str, str]]:
    """`Key: value` lines of one message, in order; other lines (junk, the banner) skipped."""
    pairs: list[tuple[str, str]] = []
    append = pairs.append
    for line in text.split("\r\n"):
        key, sep, value = line.partition(": ")
        if sep:
            append((key, value))
        elif line.endswith(":") and " " not in line:
            append((line[:-1], ""))  # `Key:` with an empty value, trailing space stripped
    return pairs


def to_event(pbx: str, pairs: list[tuple[str, str]], received_at: float) -> AmiEvent:
    name = ""
    headers: dict[str, str] = {}
    variables: dict[str, str] = {}
    for key, value in pairs:
        if key == "Event" and not name:
            name = value
        elif key == "ChanVariable" or key.startswith("ChanVariable("):
            var, _, val = value.partition("=")
            variables[var] = val
        elif key.endswith("ChanVariable"):
            var, _, val = value.partition("=")
            headers[f"{key}.{var}"] = val
        else:
            headers[key] = value
    return AmiEvent(pbx=pbx, name=name, headers=headers, variables=variables,
                    received_at=received_at)


def parse_event(pbx: str, text: str, received_at: float) -> AmiEvent:
    """One message straight to an AmiEvent (name "" when it has no `Event:`): the hot path,
    same result as to_event(parse_headers(text)) in one pass."""
    headers: dict[str, str] = {}
    variables: dict[str, str] = {}
    for line in text.split("\r\n"):
        key, sep, value = line.partition(": ")
        if sep:
            if "ChanVariable" in key:
                var, _, val = value.partition("=")
                if key == "ChanVariable" or key.startswith("ChanVariable("):
                    variables[var] = val
                else:
                    headers[f"{key}.{var}"] = val
            elif key == "Event" and "Event" in headers:
                continue  # the first Event: names the message
            else:
                headers[key] = value
        elif line.endswith(":") and " " not in line:
            headers[line[:-1]] = ""
    name = headers.pop("Event", "")
    return AmiEvent(pbx=pbx, name=name, headers=headers, variables=variables,
                    received_at=received_at)


def message_to_event(pbx: str, message: Any, received_at: float) -> AmiEvent:
    """An action-answer Message back as an AmiEvent, from the exact headers we parsed."""
    # Message.__getattr__ answers '' for a missing attribute, hence the isinstance check.
    pairs = getattr(message, "bridge_pairs", None)
    if not isinstance(pairs, list):  # a Message not built by us: flatten merged lists
        pairs = []
        for key, value in message.items():
            if key == "content":
                continue
            for item in value if isinstance(value, list) else [value]:
                pairs.append((key, item))
    return to_event(pbx, pairs, received_at)


class BridgeAmiProtocol(AMIProtocol):
    """AMIProtocol with the bytes-level reader described in the module docstring."""

    # Set by AMIProtocol.connection_made / Manager.connection_made (panoramisk is untyped).
    transport: Any
    closed: bool
    version: str | None
    responses: dict[str, Any]

    def __init__(self, sink: ProtocolSink) -> None:
        super().__init__()
        self.sink = sink
        self._pending = b""
        self._skip_to_line_end = False
        self.garbage_bytes = 0
        # ActionID -> called synchronously when that action completes (ordering in the queue).
        self.completion_hooks: dict[str, Callable[[Any], None]] = {}

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.log = log

    def data_received(self, data: bytes) -> None:
        try:
            self._feed(data)
        except Exception:  # never let a bug here close the transport and lose the chunk
            log.exception("ami.reader_error")
        self.sink.end_of_chunk()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.close()
        self.sink.protocol_lost(self, exc)

    def close(self) -> None:
        """Fail every pending action (never re-sent later), then close the transport."""
        pending = list(self.responses.values()) if self.responses else []
        self.responses.clear()
        self.completion_hooks.clear()
        for action in pending:
            if not action.future.done():
                action.future.set_exception(PbxUnavailable("connection to the PBX closed"))
        if not self.closed:
            self.closed = True
            try:
                self.transport.close()
            except Exception:  # pragma: no cover - transport already gone
                log.debug("transport close failed", exc_info=True)

    # -- reading ---------------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        received_at = self.sink.clock()
        buf = self._pending + data if self._pending else data
        if self._skip_to_line_end:
            end = buf.find(b"\r\n")
            if end == -1:
                self.garbage_bytes += len(buf)
                self._pending = b""
                return
            self.garbage_bytes += end + 2
            buf = buf[end + 2 :]
            self._skip_to_line_end = False
        if self.version is None and len(buf) >= len(BANNER_PREFIX):
            if buf.startswith(BANNER_PREFIX):
                end = buf.find(b"\r\n")
                if end == -1:
                    self._pending = buf
                    return
                self.version = buf[len(BANNER_PREFIX) : end].decode("ascii", "replace").strip()
                buf = buf[end + 2 :]
            else:
                self.version = ""
        parts = buf.split(_TERMINATOR)
        tail = parts.pop()
        for part in parts:
            if part:
                try:
                    self._message(part.decode("utf-8", "replace"), received_at)
                except Exception:  # one bad message must not cost the rest of the chunk
                    log.exception("ami.message_error")
        if len(tail) > MAX_PENDING_BYTES:
            # No message is this long: drop it up to the last line end, or all of it and the
            # rest of its line, and say so.
            cut = tail.rfind(b"\r\n")
            if cut == -1 or len(tail) - cut > MAX_PENDING_BYTES:
                self.garbage_bytes += len(tail)
                self._skip_to_line_end = True
                tail = b""
            else:
                self.garbage_bytes += cut + 2
                tail = tail[cut + 2 :]
            log.warning("ami.garbage_dropped", extra={"kv": {"pbx": self.sink.pbx_name,
                                                             "bytes": self.garbage_bytes}})
        self._pending = tail

    def _message(self, text: str, received_at: float) -> None:
        event = parse_event(self.sink.pbx_name, text, received_at)
        if event.name:
            action_id = event.headers.get("ActionID")
            if action_id is None or event.name == "OriginateResponse":
                self.sink.deliver_event(event, text)
                return
            if action_id not in self.responses:
                # The list answer of an action that already timed out: not a live event.
                log.debug("ami.orphan_answer", extra={"kv": {"event": event.name,
                                                             "action_id": action_id}})
                return
        elif "Response" not in event.headers:
            self.garbage_bytes += len(text)
            return
        self._answer(text, parse_headers(text))

    def _answer(self, text: str, pairs: list[tuple[str, str]]) -> None:
        message = Message.from_line(text.strip())
        if message is None:  # pragma: no cover - parse_headers found Response/Event above
            return
        message.bridge_pairs = pairs
        action = self.responses.get(message.id)
        if action is None and message.action_id:
            action = self.responses.get(message.action_id)
        if action is None:
            log.debug("ami.unmatched_response", extra={"kv": {"action_id": message.action_id}})
            return
        self.handle_message(message)
        if action.future.done():
            hook = self.completion_hooks.pop(action.id, None)
            if hook is not None:
                hook(action.future)


class BridgeManager(Manager):
    """panoramisk's Manager, minus its own reconnect and ping scheduling.

    The supervisor in connection.py calls `connect()` and awaits it; it logs in itself, pings
    with a timeout, and decides when and whether to reconnect.
    """

    def __init__(self, *, host: str, port: int, loop: asyncio.AbstractEventLoop,
                 protocol_factory: Callable[[], BridgeAmiProtocol]) -> None:
        super().__init__(host=host, port=port, loop=loop, protocol_factory=protocol_factory,
                         encoding="utf8", ssl=False, ping_delay=3600, ping_interval=3600,
                         log=log)
        self.pinger: Any = None
        # panoramisk re-sends actions on FullyBooted (pitfall 7): never.
        self.callbacks.clear()
        self.patterns.clear()

    def use_tls(self, context: ssl.SSLContext | None) -> None:
        """TLS (a client context) or plaintext for the next `connect()`."""
        self.config["ssl"] = context or False

    def connection_made(self, f: asyncio.Future[Any]) -> None:
        if f.cancelled() or f.exception() is not None:
            return  # the supervisor awaits the same task and handles the failure
        super().connection_made(f)
        if self.pinger is not None:
            self.pinger.cancel()
            self.pinger = None

    def ping(self) -> None:
        """Our watchdog pings with a timeout; panoramisk's unchecked pings are off."""

    def connection_lost(self, exc: BaseException | None) -> None:
        """Called by panoramisk's protocol; reconnecting is the supervisor's job."""
        self._connected = False
