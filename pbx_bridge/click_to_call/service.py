"""Click-to-call: validate, store, originate through the PBX, follow the call's AMI events.

States: queued -> dialing_operator -> dialing_customer -> connected -> ended, or failed with a
reason. Transitions only move forward; ended and failed are final. They come from:
- the Originate's outcome (`OriginateResponse`, or the result of `originate()`),
- `DialBegin` / `DialEnd` of the operator's leg (no caller, `DestUniqueid` = our ChannelId) and
  of the customer's leg (dialled from the call whose Linkedid = our ChannelId),
- the `Hangup` of the operator's leg, and the call pipeline's changes (answered / ended) for
  calls whose record carries `click_to_call_id`.

Wiring (the coordinator): register the service as a CallHook (after crm and recordings, before
the notifier) and call `await service.on_event(event)` from the AMI consumer for every AmiEvent;
it returns at once for events that are not about an active request.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_sync.phones import InvalidPhoneNumber, ascii_digits, parse_or_raise
from pbx_bridge.ami.errors import ActionFailed, ActionTimeout, PbxUnavailable
from pbx_bridge.ami.events import AmiEvent
from pbx_bridge.bus import EventBus
from pbx_bridge.calls.changes import CallChange
from pbx_bridge.click_to_call.dialing import dial_string, originate_fields
from pbx_bridge.click_to_call.group_insert import GroupInserter
from pbx_bridge.click_to_call.schema import click_to_call_requests as table
from pbx_bridge.config import PbxConfig, Settings
from pbx_bridge.db.schema import calls
from pbx_bridge.events.messages import make_message
from pbx_bridge.log import event as log_event

log = logging.getLogger("pbx_bridge.click_to_call")

State = Literal["queued", "dialing_operator", "dialing_customer", "connected", "ended", "failed"]
STATES: tuple[State, ...] = ("queued", "dialing_operator", "dialing_customer", "connected", "ended",
                             "failed")
REASONS = ("operator_no_answer", "operator_busy", "operator_unavailable", "customer_busy",
           "customer_no_answer", "invalid_number", "pbx_unavailable", "originate_rejected",
           "cancelled")
_RANK = {"queued": 0, "dialing_operator": 1, "dialing_customer": 2, "connected": 3,
         "ended": 4, "failed": 4}
FINAL = frozenset({"ended", "failed"})

# OriginateResponse `Reason` (Asterisk's AST_CONTROL_*): 4 answered, others = the operator leg failed.
_ORIGINATE_REASON = {"0": "operator_unavailable", "1": "operator_no_answer", "3": "operator_no_answer",
                     "5": "operator_busy", "8": "operator_unavailable"}
_OPERATOR_DIAL = {"NOANSWER": "operator_no_answer", "BUSY": "operator_busy",
                  "CANCEL": "operator_no_answer", "CHANUNAVAIL": "operator_unavailable",
                  "CONGESTION": "operator_unavailable"}
# A trunk answers CONGESTION for numbers it cannot route (cause 28, invalid number format).
_CUSTOMER_DIAL = {"NOANSWER": "customer_no_answer", "BUSY": "customer_busy",
                  "CANCEL": "cancelled", "CHANUNAVAIL": "pbx_unavailable",
                  "CONGESTION": "invalid_number"}


class PbxOriginator(Protocol):
    """What click-to-call needs from a PBX connection (pbx_bridge.ami.connection.PbxConnection)."""

    async def originate(self, fields: dict[str, Any], timeout: float) -> Any: ...  # noqa: ASYNC109


def pbx_ready(connection: Any) -> bool:
    """Whether a connection is logged in: its `connected` flag, or `state == "connected"`.
    A connection exposing neither is tried, and its originate() decides."""
    flag = getattr(connection, "connected", None)
    if isinstance(flag, bool):
        return flag
    state = getattr(connection, "state", None)
    if state is None:
        return True
    return str(getattr(state, "value", state)) in ("connected", "up", "logged_in")


# Retry-After (seconds) of a request sent to a standby: a takeover takes a few seconds at most.
STANDBY_RETRY_AFTER = 2.0


class ClickToCallError(Exception):
    def __init__(self, status: int, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


@dataclass
class ClickToCall:
    id: str
    state: str
    reason: str | None
    extension: str
    number: str
    number_entered: str
    dial: str
    client_id: int | None
    pbx: str
    channel_id: str
    call_id: int | None
    idempotency_key: str | None
    token_id: int | None
    created_at: datetime
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "state": self.state, "reason": self.reason, "extension": self.extension,
            "number": self.number, "dial": self.dial, "client_id": self.client_id, "pbx": self.pbx,
            "call_id": self.call_id, "idempotency_key": self.idempotency_key,
            "created_at": _iso(self.created_at), "updated_at": _iso(self.updated_at),
        }


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _from_row(row: Any) -> ClickToCall:
    return ClickToCall(row.id, row.state, row.reason, row.extension, row.number, row.number_entered,
                       row.dial, row.client_id, row.pbx, row.channel_id, row.call_id,
                       row.idempotency_key, row.token_id, row.created_at, row.updated_at)


@dataclass(frozen=True)
class NewRequest:
    extension: str
    number: str  # as entered
    client_id: int | None = None
    idempotency_key: str | None = None


# runtime.services key of the one ClickToCallService (made by the assembly, or by the server).
SERVICE_KEY = "click_to_call"

# Whether some person or API token of the bridge has this extension.
KnownExtension = Callable[[str], Awaitable[bool]]


class ClickToCallService:
    def __init__(self, settings: Settings, engine: AsyncEngine, bus: EventBus,
                 pbx: Mapping[str, Any], acting: Callable[[], bool] = lambda: True,
                 known_extension: KnownExtension | None = None) -> None:
        self._settings = settings
        # Whether the bridge knows an extension (a web user's or an API token's): asked of the
        # features that keep them, passed in by the server (pbx_bridge.server.identities).
        # Without it only the configured lists count.
        self._known_extension = known_extension
        # With standbys only the active bridge places calls (pbx_bridge.standby).
        self.acting = acting
        self._engine = engine
        self._bus = bus
        self._pbx = pbx
        # Requests not final yet, by id and by ChannelId (the call's Linkedid): the AMI consumer
        # asks about every event, so this must answer without the database.
        self._active: dict[str, ClickToCall] = {}
        self._by_channel: dict[str, str] = {}
        self._loaded = False
        self._load_lock = asyncio.Lock()
        # This service's writes go one at a time: on SQLite, concurrent writers would otherwise
        # meet the busy handler's sleeps (up to 100 ms) instead of a short in-process wait.
        self._write_lock = asyncio.Lock()
        self._inserter = GroupInserter(engine, table, self._write_lock)
        self._last_expiry = 0.0
        self._tasks: set[asyncio.Task[None]] = set()

    # --- requests --------------------------------------------------------------------------

    def _pbx_target(self) -> tuple[str, Any, PbxConfig]:
        wanted = self._settings.click_to_call.pbx
        if not self._pbx:
            raise ClickToCallError(503, "pbx_unavailable", "no PBX connection is configured",
                                   self._settings.click_to_call.retry_after)
        name = wanted or next(iter(self._pbx))
        if name not in self._pbx:
            raise ClickToCallError(503, "pbx_unavailable", f"no PBX named {name!r} is connected",
                                   self._settings.click_to_call.retry_after)
        config = next((p for p in self._settings.pbx if p.name == name), None) or PbxConfig(name=name)
        return name, self._pbx[name], config

    def validate(self, request: NewRequest) -> tuple[str, str]:
        """(E.164, dial string) or ClickToCallError 422 with the reason."""
        ext = request.extension.strip()
        phone = self._settings.phone
        if not (ascii_digits(ext) and len(ext) <= phone.max_extension_length):
            raise ClickToCallError(422, "unknown_extension",
                                   f"extension {request.extension!r} is not an operator's extension")
        allowed = self._settings.click_to_call.extensions
        if allowed and ext not in allowed:
            raise ClickToCallError(422, "unknown_extension", f"extension {ext} is not known")
        try:
            e164 = parse_or_raise(request.number, phone.default_region, phone.max_extension_length)
        except InvalidPhoneNumber as exc:
            raise ClickToCallError(422, "invalid_number", str(exc)) from None
        return e164, dial_string(e164, phone.default_region, self._settings.click_to_call.dial_format)

    async def check_known(self, extension: str) -> None:
        """422 unless the extension is one the bridge knows. With `click_to_call.extensions` set,
        validate() holds the request to that list; without it, known are the extensions of web
        users and unrevoked API tokens, `crm.kommo.users` and the demo simulator's operators
        (not any digits: `99999` would make the PBX ring whatever the dialplan makes of it)."""
        ext = extension.strip()
        if self._settings.click_to_call.extensions:
            return  # validate() checks the configured list
        configured = set(self._settings.crm.kommo.users)
        if not self._settings.pbx and self._settings.simulator.enabled:
            configured.update(self._settings.simulator.operators)
        if ext in configured:
            return
        if self._known_extension is None or not await self._known_extension(ext):
            raise ClickToCallError(422, "unknown_extension",
                                   f"extension {ext} is not known: no web user or API token has it "
                                   "(or set click_to_call.extensions)")

    async def create(self, new: NewRequest, token_id: int | None,
                     caller_kind: str = "token") -> tuple[ClickToCall, bool]:
        """The request and whether it is new (False: the same idempotency key was seen from the
        same caller: `caller_kind` "token" or "user" with its id `token_id`)."""
        await self._ensure_loaded()
        e164, dial = self.validate(new)
        if time.monotonic() - self._last_expiry > 1.0:  # a scan of the active ones, at most 1/s
            self._last_expiry = time.monotonic()
            await self.expire_stale()
        if new.idempotency_key:
            existing = await self._by_key(caller_kind, token_id, new.idempotency_key)
            if existing is not None:
                return self._check_same(existing, new, e164), False
        if not self.acting():
            raise ClickToCallError(503, "standby", "this bridge is a standby: the active one places "
                                   "calls", STANDBY_RETRY_AFTER)
        name, connection, config = self._pbx_target()
        if not pbx_ready(connection):
            raise ClickToCallError(503, "pbx_unavailable", f"the PBX {name!r} is not connected",
                                   self._settings.click_to_call.retry_after)
        now = datetime.now(UTC)
        item = ClickToCall(
            id=str(uuid.uuid4()), state="queued", reason=None, extension=new.extension.strip(),
            number=e164, number_entered=new.number[:64], dial=dial, client_id=new.client_id,
            pbx=name, channel_id=str(uuid.uuid4()), call_id=None,
            idempotency_key=new.idempotency_key, token_id=token_id, created_at=now, updated_at=now)
        try:
            # Stored before anything is sent: a request is never placed without its record.
            await self._inserter.insert(dict(
                id=item.id, caller_kind=caller_kind, token_id=token_id,
                idempotency_key=item.idempotency_key,
                extension=item.extension, number=item.number, number_entered=item.number_entered,
                dial=item.dial, client_id=item.client_id, pbx=item.pbx, channel_id=item.channel_id,
                state=item.state, reason=None, call_id=None, created_at=now, updated_at=now))
        except sa.exc.IntegrityError:
            # The same key at the same moment from a concurrent request: that one wins.
            existing = await self._by_key(caller_kind, token_id, new.idempotency_key or "")
            if existing is None:
                raise
            return self._check_same(existing, new, e164), False
        self._track(item)
        log_event(log, logging.INFO, "click_to_call.created", request=item.id, extension=item.extension,
                  pbx=name)
        fields = originate_fields(
            operator_channel=config.operator_dial_string.replace("{ext}", item.extension),
            context=config.outbound_context, dial=dial, extension=item.extension,
            channel_id=item.channel_id, request_id=item.id,
            ring_seconds=self._settings.click_to_call.originate_timeout)
        task = asyncio.create_task(self._originate(item, connection, fields))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        # Wait briefly so a PBX that refuses at once gives the caller a 503, not a 202.
        await asyncio.wait({task}, timeout=self._settings.click_to_call.accept_wait)
        current = self._active.get(item.id) or await self.get(item.id) or item
        if current.state == "failed" and current.reason == "pbx_unavailable":
            raise ClickToCallError(503, "pbx_unavailable", f"the PBX {name!r} is not available",
                                   self._settings.click_to_call.retry_after)
        return current, True

    def _check_same(self, existing: ClickToCall, new: NewRequest, e164: str) -> ClickToCall:
        if existing.extension != new.extension.strip() or existing.number != e164:
            raise ClickToCallError(409, "idempotency_key_reused",
                                   "this idempotency_key was used for a different request")
        return existing

    async def _by_key(self, caller_kind: str, token_id: int | None, key: str) -> ClickToCall | None:
        query = sa.select(table).where(table.c.idempotency_key == key,
                                       table.c.caller_kind == caller_kind)
        query = query.where(table.c.token_id.is_(None) if token_id is None else table.c.token_id == token_id)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _from_row(row)

    async def get(self, request_id: str) -> ClickToCall | None:
        if request_id in self._active:
            await self.expire_stale()
        if request_id in self._active:
            return self._active[request_id]
        async with self._engine.connect() as conn:
            row = (await conn.execute(sa.select(table).where(table.c.id == request_id))).first()
        return None if row is None else _from_row(row)

    async def _originate(self, item: ClickToCall, connection: Any, fields: dict[str, Any]) -> None:
        timeout = self._settings.click_to_call.originate_timeout + 10.0
        if not self.acting():  # stood down since the request was accepted: never place it
            await self._move(item.id, "failed", "pbx_unavailable", release_key=True)
            return
        # The Originate goes out first; recording the state must not delay it.
        sent = asyncio.ensure_future(connection.originate(fields, timeout))
        # Kept in memory (GET and live events show it) and written with the next change: one
        # write less per request on the busy path; a restart resumes from "queued" just as well.
        await self._move(item.id, "dialing_operator", persist=False)
        try:
            result = await sent
        except ActionTimeout:
            # Asterisk may have placed the call: keep following its events; never re-send.
            log_event(log, logging.WARNING, "click_to_call.originate_timeout", request=item.id)
            return
        except PbxUnavailable as exc:
            # Nothing was placed: release the idempotency key so the same request can be retried.
            await self._move(item.id, "failed", "pbx_unavailable", release_key=True)
            log_event(log, logging.WARNING, "click_to_call.pbx_unavailable", request=item.id, error=str(exc))
            return
        except ActionFailed as exc:
            await self._move(item.id, "failed", "originate_rejected")
            log_event(log, logging.WARNING, "click_to_call.rejected", request=item.id, error=str(exc))
            return
        except Exception:
            log.exception("click_to_call.originate_error", extra={"kv": {"request": item.id}})
            await self._move(item.id, "failed", "pbx_unavailable")
            return
        for message in _messages(result):
            if message.get("Event") == "OriginateResponse":
                await self._originate_response(item.id, message)

    # --- following the call ---------------------------------------------------------------

    async def on_event(self, event: AmiEvent) -> None:
        """Feed every AMI event (cheap for unrelated ones)."""
        name = event.name
        if name not in ("OriginateResponse", "DialBegin", "DialEnd", "Hangup"):
            return
        if not self._loaded:
            await self._ensure_loaded()
        request_id = self._request_for(event)
        if request_id is None:
            return
        item = self._active[request_id]
        if name == "OriginateResponse":
            await self._originate_response(request_id, event.headers)
        elif name == "DialBegin":
            if event.get("DestUniqueid") == item.channel_id:
                await self._move(request_id, "dialing_operator")
            else:
                await self._move(request_id, "dialing_customer")
        elif name == "DialEnd":
            status = event.get("DialStatus").upper()
            if event.get("DestUniqueid") == item.channel_id:  # the operator's phone
                if status == "ANSWER":
                    await self._move(request_id, "dialing_customer")
                elif status in _OPERATOR_DIAL:
                    await self._move(request_id, "failed", _OPERATOR_DIAL[status])
            elif status == "ANSWER":
                await self._move(request_id, "connected")
            elif status in _CUSTOMER_DIAL:
                await self._move(request_id, "failed", _CUSTOMER_DIAL[status])
        elif name == "Hangup" and event.get("Uniqueid") == item.channel_id:
            await self._finish(request_id)

    def _request_for(self, event: AmiEvent) -> str | None:
        h = event.headers
        for key in ("Uniqueid", "DestUniqueid", "Linkedid", "DestLinkedid"):
            value = h.get(key)
            if value and value in self._by_channel:
                return self._by_channel[value]
        call_id = event.variables.get("CALL_ID")
        if call_id and call_id in self._active:
            return call_id
        return None

    async def _originate_response(self, request_id: str, headers: Mapping[str, Any]) -> None:
        response = str(headers.get("Response", ""))
        reason = str(headers.get("Reason", ""))
        if response == "Success" or reason == "4":
            await self._move(request_id, "dialing_customer")
        else:
            await self._move(request_id, "failed", _ORIGINATE_REASON.get(reason, "operator_no_answer"))

    async def on_change(self, change: CallChange) -> None:
        """CallHook: link the call record, and follow answered / ended."""
        request_id = change.record.click_to_call_id
        if not request_id and change.backfilled:
            # Rebuilt from CEL, which carries no CALL_ID: ours by its Linkedid (our ChannelId).
            if not self._loaded:
                await self._ensure_loaded()
            request_id = self._by_channel.get(change.record.linkedid)
            if request_id and change.record.id is not None:
                async with self._engine.begin() as conn:
                    await conn.execute(sa.update(calls).where(
                        calls.c.id == change.record.id, calls.c.click_to_call_id.is_(None))
                        .values(click_to_call_id=request_id))
                change.record.click_to_call_id = request_id
        if not request_id:
            return
        if not self._loaded:
            await self._ensure_loaded()
        item = self._active.get(request_id)
        if item is None:
            return
        if change.record.id is not None and item.call_id != change.record.id:
            await self._move(request_id, item.state, call_id=change.record.id)
        if change.kind == "answered":
            await self._move(request_id, "connected")
        elif change.kind == "ended":
            if change.record.status == "answered":
                await self._move(request_id, "connected")
            await self._finish(request_id)

    async def expire_stale(self, now: datetime | None = None) -> int:
        """Requests the PBX never reported back on (a connection lost before any event) fail
        once no ringing could still be going on: nothing stays "dialing" forever. A connected
        call ends with its call record (resync closes calls that ended during an outage)."""
        now = now or datetime.now(UTC)
        ring = self._settings.click_to_call.originate_timeout
        limits = {"queued": ring + 60.0, "dialing_operator": ring + 60.0,
                  "dialing_customer": 2 * ring + 120.0}
        stale = [item for item in self._active.values()
                 if item.state in limits and (now - item.created_at).total_seconds() > limits[item.state]]
        for item in stale:
            reason = "customer_no_answer" if item.state == "dialing_customer" else "operator_no_answer"
            await self._move(item.id, "failed", reason)
        return len(stale)

    async def _finish(self, request_id: str) -> None:
        item = self._active.get(request_id)
        if item is None:
            return
        if item.state == "connected":
            await self._move(request_id, "ended")
        elif item.state == "dialing_customer":
            await self._move(request_id, "failed", "customer_no_answer")
        elif item.state in ("queued", "dialing_operator"):
            await self._move(request_id, "failed", "operator_no_answer")

    async def _move(self, request_id: str, state: str, reason: str | None = None, *,
                    call_id: int | None = None, release_key: bool = False, persist: bool = True) -> None:
        # One change at a time: the originate task and the AMI consumer race on the same request.
        async with self._write_lock:
            await self._move_locked(request_id, state, reason, call_id, release_key, persist)

    async def _move_locked(self, request_id: str, state: str, reason: str | None,
                           call_id: int | None, release_key: bool, persist: bool) -> None:
        item = self._active.get(request_id)
        if item is None or item.state in FINAL:
            return
        same = state == item.state
        if not same and _RANK[state] <= _RANK[item.state]:
            return  # never backwards (duplicate or late events)
        now = datetime.now(UTC)
        values: dict[str, Any] = {"state": state, "updated_at": now}
        if state == "failed":
            values["reason"] = reason
        if call_id is not None:
            values["call_id"] = call_id
        if release_key:
            values["idempotency_key"] = None
        if persist:
            async with self._engine.begin() as conn:
                await conn.execute(table.update().where(table.c.id == request_id).values(**values))
        item.state = state
        item.updated_at = now
        if state == "failed":
            item.reason = reason
        if call_id is not None:
            item.call_id = call_id
        if release_key:
            item.idempotency_key = None
        if state in FINAL:
            self._untrack(item)
        if not same:
            log_event(log, logging.INFO, "click_to_call.state", request=request_id, state=state,
                      reason=reason)
            self._bus.publish(make_message("click_to_call.updated", [item.extension],
                                           click_to_call=item.to_dict()))

    def _track(self, item: ClickToCall) -> None:
        self._active[item.id] = item
        self._by_channel[item.channel_id] = item.id

    def _untrack(self, item: ClickToCall) -> None:
        self._active.pop(item.id, None)
        self._by_channel.pop(item.channel_id, None)

    def forget(self) -> None:
        """Read the unfinished requests from the database again at next use (a takeover: the
        bridge that was active placed some of them)."""
        self._loaded = False

    async def _ensure_loaded(self) -> None:
        """Requests left unfinished by a previous run are followed again."""
        if self._loaded:
            return
        async with self._load_lock:
            if self._loaded:
                return
            async with self._engine.connect() as conn:
                rows = await conn.execute(sa.select(table).where(table.c.state.not_in(list(FINAL))))
                for row in rows:
                    self._track(_from_row(row))
            self._loaded = True

    async def close(self) -> None:
        await self._inserter.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _messages(result: Any) -> list[Mapping[str, Any]]:
    """The AMI messages in whatever originate() returned (one message, a list, or nothing)."""
    if result is None:
        return []
    items = result if isinstance(result, list | tuple) else [result]
    return [m for m in items if isinstance(m, Mapping) or hasattr(m, "get")]
