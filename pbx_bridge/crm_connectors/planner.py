"""What a native connector must send for each call change, written to the outbox.

The CRM stage (pbx_bridge.clients.hook) calls `live()` with each saved batch, before the batch's
ended calls are finished, and `ended()` inside the transaction that finishes an ended call (so
the call's final items are committed with its card work, or not at all).

Bitrix24, per call: `register` once the call has a customer and an operator (the first one rung
for an inbound call, the one placing it for an outbound call), with the card shown to that
operator; `show` to each further operator rung (a ring-all queue); `hide` for the others once one
answers (or takes a transfer); at the end `hide` for any still shown, `finish`, then
`attachRecord` and `attachTranscription` for an answered call. The live items are not part of a
transaction with the call: lost in a crash, the end's `finish` registers the call itself.

Kommo, per call: one call item at the end (it needs the outcome and the recording's link).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from crm_sync.bitrix24 import items as b24
from crm_sync.connector_store import remember_external_id
from crm_sync.contacts import CallFacts, ContactPolicy, Resolution, should_create
from crm_sync.kommo import items as kommo
from crm_sync.outbox import enqueue
from pbx_bridge.calls.changes import CallChange
from pbx_bridge.calls.record import CallRecord, to_datetime
from pbx_bridge.click_to_call.lookup import idempotency_key

# Click-to-call requests placed for Bitrix24's OnExternalCallStart carry this idempotency key
# prefix before Bitrix24's CALL_ID (pbx_bridge.crm_connectors.http).
BITRIX24_C2C_PREFIX = "b24:"

# Live calls remembered (which operators see the card); the oldest are forgotten beyond this.
MAX_LIVE_CALLS = 20_000
Lookup = Callable[[str], Awaitable[dict[str, Any] | None]]


class OutboxPlanner(Protocol):
    lookup: Lookup | None

    async def live(self, changes: Sequence[CallChange]) -> int: ...

    async def live_change(self, change: CallChange) -> int: ...

    async def prepare(self, changes: Sequence[CallChange]) -> int: ...

    async def ended(self, conn: AsyncConnection, record: CallRecord, facts: CallFacts,
                    res: Resolution, now: datetime) -> int: ...


@dataclass
class _Card:
    registered_for: str | None = None
    shown: list[str] = field(default_factory=list)
    # Placed from Bitrix24 (OnExternalCallStart): registered there already, with this CALL_ID.
    external_id: str | None = None
    checked_origin: bool = False


def _customer_call(record: CallRecord) -> bool:
    return record.direction in ("inbound", "outbound") and bool(record.customer_number)


class Bitrix24Planner:
    def __init__(self, engine: AsyncEngine, policy: ContactPolicy, *, show_card: bool,
                 attach_wait: timedelta, outbound_line: str = "", transcripts: bool = True) -> None:
        self.engine = engine
        self.transcripts = transcripts
        self.policy = policy
        self.show_card = show_card
        self.attach_wait = attach_wait
        self.outbound_line = outbound_line
        self.lookup: Lookup | None = None
        self._cards: dict[tuple[str, str], _Card] = {}
        # Changes already planned by the CRM stage's prepare() (calls that ended in their batch),
        # which the pipeline then hands to live_change() too.
        self._planned: set[int] = set()

    def _register_payload(self, record: CallRecord, extension: str | None, *, crm_create: bool,
                          show: bool) -> dict[str, Any]:
        started = to_datetime(record.started_at)
        assert started is not None and record.id is not None
        payload = b24.call_ref(pbx=record.pbx, linkedid=record.linkedid, call_id=record.id)
        payload.update(b24.register_fields(
            number=record.customer_number or "", direction=record.direction,
            did=record.did if record.direction == "inbound" else None, extension=extension,
            started_at=started, crm_create=crm_create, show=show))
        if record.direction == "outbound" and self.outbound_line:
            payload["line"] = self.outbound_line
        return payload

    def _card(self, record: CallRecord) -> _Card:
        key = (record.pbx, record.linkedid)
        card = self._cards.get(key)
        if card is None:
            card = self._cards[key] = _Card()
            while len(self._cards) > MAX_LIVE_CALLS:
                self._cards.pop(next(iter(self._cards)))
        return card

    async def _placed_from_bitrix24(self, changes: Sequence[CallChange]) -> None:
        """Calls placed for OnExternalCallStart: their CALL_ID, kept for the call (before any of
        its items can be sent, so no register goes out for them)."""
        unchecked = [c.record for c in changes if c.record.click_to_call_id and c.kind != "ended"
                     and not self._card(c.record).checked_origin]
        if not unchecked:
            return
        async with self.engine.begin() as conn:
            for record in unchecked:
                card = self._card(record)
                card.checked_origin = True
                key = await idempotency_key(conn, str(record.click_to_call_id))
                if key and key.startswith(BITRIX24_C2C_PREFIX):
                    card.external_id = key[len(BITRIX24_C2C_PREFIX):]
                    await remember_external_id(conn, "bitrix24", record.pbx, record.linkedid,
                                               card.external_id, "click_to_call", datetime.now(UTC))

    def _changes_items(self, change: CallChange) -> list[tuple[str, str, dict[str, Any]]]:
        record = change.record
        if change.kind == "ended" or record.id is None or not _customer_call(record):
            return []
        card = self._card(record)
        out: list[tuple[str, str, dict[str, Any]]] = []
        client_key = b24.client_key(record.id)
        ref = b24.call_ref(pbx=record.pbx, linkedid=record.linkedid, call_id=record.id)
        if card.registered_for is None:
            if record.direction == "inbound":
                ext = change.extension if change.kind in ("ringing", "answered", "transferred") else None
            else:
                ext = record.operator or (record.operators_rung[0] if record.operators_rung else None)
            if ext is None:
                return []
            if card.external_id is not None:  # Bitrix24 registered it and shows its own card
                card.registered_for = ext
                return []
            # Live: the outcome is unknown, so only an "every" policy can ask for a lead now.
            rule = self.policy.inbound if record.direction == "inbound" else self.policy.outbound
            out.append((client_key, b24.KIND_REGISTER, self._register_payload(
                record, ext, crm_create=rule == "every", show=self.show_card)))
            card.registered_for = ext
            if self.show_card:
                card.shown = [ext]
        elif change.kind == "ringing" and change.extension and self.show_card \
                and change.extension not in card.shown:
            out.append((client_key, b24.KIND_SHOW, {**ref, "extensions": [change.extension]}))
            card.shown.append(change.extension)
        if change.kind in ("answered", "transferred"):
            current = change.extension or record.operator
            others = [ext for ext in card.shown if ext != current]
            if others:
                out.append((client_key, b24.KIND_HIDE, {**ref, "extensions": others}))
                card.shown = [ext for ext in card.shown if ext == current]
        return out

    async def live_change(self, change: CallChange) -> int:
        """The pipeline's last stage, for every change: plan it unless prepare() did; an ended
        call is forgotten once its last change went by."""
        if id(change) in self._planned:
            self._planned.discard(id(change))
            if change.kind == "ended":
                self._cards.pop((change.record.pbx, change.record.linkedid), None)
            return 0
        if change.kind == "ended":
            self._cards.pop((change.record.pbx, change.record.linkedid), None)
            return 0
        return await self.live([change])

    async def live(self, changes: Sequence[CallChange]) -> int:
        await self._placed_from_bitrix24(changes)
        planned = [item for change in changes for item in self._changes_items(change)]
        return await self._enqueue_live(planned)

    async def prepare(self, changes: Sequence[CallChange]) -> int:
        """The CRM stage's prepare(): a batch's ended calls, planned before their finish."""
        self._planned.update(id(c) for c in changes)
        return await self.live(changes)

    async def _enqueue_live(self, planned: list[tuple[str, str, dict[str, Any]]]) -> int:
        if not planned:
            return 0
        now = datetime.now(UTC)
        async with self.engine.begin() as conn:
            for client_key, kind, payload in planned:
                await enqueue(conn, client_key, kind, payload, now)
        return len(planned)

    async def ended(self, conn: AsyncConnection, record: CallRecord, facts: CallFacts,
                    res: Resolution, now: datetime) -> int:
        card = self._cards.get((record.pbx, record.linkedid)) or _Card()
        if record.id is None or not (_customer_call(record) or record.click_to_call_id):
            return 0
        client_key = b24.client_key(record.id)
        ref = b24.call_ref(pbx=record.pbx, linkedid=record.linkedid, call_id=record.id)
        finisher = record.operator or (record.operators_rung[-1] if record.operators_rung else None) \
            or card.registered_for
        planned: list[tuple[str, dict[str, Any]]] = []
        leftover = [ext for ext in card.shown if ext != finisher]
        if leftover:  # finish hides the card of its USER_ID only
            planned.append((b24.KIND_HIDE, {**ref, "extensions": leftover}))
        first = card.registered_for or (record.operators_rung[0] if record.operators_rung else None) \
            or record.operator
        finish = self._register_payload(record, first, crm_create=should_create(self.policy, facts),
                                        show=False)
        finish.update(operator=finisher, talk_seconds=record.talk_seconds, status=record.status)
        planned.append((b24.KIND_FINISH, finish))
        if record.status == "answered":
            wait_until = (now + self.attach_wait).isoformat()
            planned.append((b24.KIND_RECORD, {**ref, "wait_until": wait_until}))
            if self.transcripts:
                planned.append((b24.KIND_TRANSCRIPT, {**ref, "wait_until": wait_until}))
        for kind, payload in planned:
            await enqueue(conn, client_key, kind, payload, now)
        return len(planned)


class KommoPlanner:
    def __init__(self, policy: ContactPolicy, *, attach_wait: timedelta) -> None:
        self.policy = policy
        self.attach_wait = attach_wait
        self.lookup: Lookup | None = None

    async def live(self, changes: Sequence[CallChange]) -> int:
        return 0  # Kommo has no live call card to drive: the screen pop reads (lookup)

    async def live_change(self, change: CallChange) -> int:
        return 0

    async def prepare(self, changes: Sequence[CallChange]) -> int:
        return 0

    async def ended(self, conn: AsyncConnection, record: CallRecord, facts: CallFacts,
                    res: Resolution, now: datetime) -> int:
        if record.id is None or not _customer_call(record):
            return 0
        payload = {
            "call_id": record.id, "uniq": str(record.id), "direction": record.direction,
            "phone": res.e164 or record.customer_number, "name": record.customer_name,
            "duration": round(record.talk_seconds or 0), "status": record.status,
            "operator": record.operator or (record.operators_rung[-1] if record.operators_rung else None),
            "did": record.did, "created_at": int(record.started_at),
            "create_unsorted": should_create(self.policy, facts),
            "wants_recording": record.status == "answered",
            "wait_until": (now + self.attach_wait).isoformat(),
        }
        await enqueue(conn, kommo.client_key(res.e164, record.customer_number, record.id),
                      kommo.KIND_CALL, payload, now)
        return 1
