"""The CRM stage of the call pipeline.

While a call rings: who is calling (the screen pop's card), with one indexed lookup per call
(cached for the rest of the call). When it ends: the card (created by the policy when there is
none), the call on its timeline, call-back tasks opened or closed, outbox items for the external
CRM, and the call row's client_id / client_ambiguous.

The pipeline hands the hook each saved batch first (`prepare`): the card work of every call that
ended in the batch is done in ONE transaction, so under load a commit (and a pool checkout) is paid
per batch, not per call. The per-change pass (`on_change`) then only applies the results, in order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from crm_sync import tasks as crm_tasks
from crm_sync.cards import Card, card_exists
from crm_sync.connector import KIND_CALL, KIND_CONTACT, HttpConnector
from crm_sync.contacts import CallFacts, Resolution, resolve_or_create, run_claiming
from crm_sync.matching import match_number
from crm_sync.outbox import enqueue
from crm_sync.timeline import attach_call, call_payload
from pbx_bridge.bus import EventBus
from pbx_bridge.calls.changes import CallChange
from pbx_bridge.calls.record import CallRecord, to_datetime
from pbx_bridge.calls.store import ended_without_crm
from pbx_bridge.clients.caller_lookup import CallerLookup
from pbx_bridge.config import Settings
from pbx_bridge.crm_connectors.options import contact_policy, match_settings
from pbx_bridge.crm_connectors.planner import OutboxPlanner
from pbx_bridge.db.schema import calls
from pbx_bridge.events.messages import make_message, task_message
from pbx_bridge.log import event

log = logging.getLogger("pbx_bridge.clients.hook")
# Live calls whose screen pop is remembered; beyond this the oldest are forgotten (a call that
# never ended would otherwise be kept forever).
MAX_LIVE_CALLS = 20_000


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Finished:
    """One ended call's card work, done; `card` is the card when it was created by this call;
    `tasks` the call-backs it opened or closed (announced live once committed)."""

    resolution: Resolution
    enqueued: int
    card: Card | None
    tasks: list[crm_tasks.Task] = field(default_factory=list)


def call_facts(record: CallRecord) -> CallFacts:
    started = to_datetime(record.started_at)
    assert started is not None
    return CallFacts(
        call_id=record.id,
        direction=record.direction,
        status=record.status,
        customer_number=record.customer_number,
        customer_name=record.customer_name,
        did=record.did,
        operator=record.operator,
        started_at=started,
        answered_at=to_datetime(record.answered_at),
        ended_at=to_datetime(record.ended_at),
        wait_seconds=record.wait_seconds,
        talk_seconds=record.talk_seconds,
        pbx=record.pbx,
        linkedid=record.linkedid,
    )


class CrmHook:
    """A CallHook (pbx_bridge.calls.changes) for client cards."""

    def __init__(
        self,
        engine: AsyncEngine,
        settings: Settings,
        *,
        bus: EventBus | None = None,
        connector: HttpConnector | None = None,
        outbox_wake: asyncio.Event | None = None,
        clock: Callable[[], datetime] = utcnow,
        lookup: CallerLookup | None = None,
        planner: OutboxPlanner | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.match = match_settings(settings)
        self.lookup = lookup or CallerLookup(engine, self.match)
        self.policy = contact_policy(settings)
        self.bus = bus
        self.connector = connector
        self.outbox_wake = outbox_wake
        self.clock = clock
        self.external = settings.crm.external_enabled
        # A native connector (Bitrix24, Kommo): its outbox items instead of the generic ones.
        self.planner = planner
        self.external_lookup = planner.lookup if planner is not None else (
            connector.lookup if connector is not None and connector.settings.lookup_url else None)
        # (pbx, linkedid) -> (card summary or None, client id, ambiguous)
        self._live: dict[tuple[str, str], tuple[dict[str, Any] | None, int | None, bool]] = {}
        # The current batch's ended calls, finished by prepare(): (pbx, linkedid, id(record)).
        self._finished: dict[tuple[str, str, int], Finished] = {}

    def close(self) -> None:
        self.lookup.close()

    async def prepare(self, changes: Sequence[CallChange]) -> None:
        """Before the batch's per-change pass: every ended call's card work, in one transaction.
        If that fails, nothing is kept and on_change does each call in its own transaction (one
        broken call must not cost the others their cards)."""
        self._finished.clear()
        # A call that rang and ended within the batch is identified first: its screen pop shows
        # the caller as they were when the phone rang, not the card their hang-up creates.
        for change in changes:
            record = change.record
            key = (record.pbx, record.linkedid)
            if (change.kind != "ended" and record.direction != "internal"
                    and record.customer_number and key not in self._live):
                self._remember(key, await self.identify(record))
        if self.planner is not None:
            try:
                if await self.planner.prepare(changes) and self.outbox_wake is not None:
                    self.outbox_wake.set()
            except Exception:  # the call card work must go on; finish registers a call itself
                log.exception("crm.connector_live_failed")
        ended = [c.record for c in changes if c.kind == "ended"]
        if not ended:
            return
        for record, finished in await self._finish_ended(ended):
            self._finished[(record.pbx, record.linkedid, id(record))] = finished

    async def on_change(self, change: CallChange) -> None:
        record = change.record
        if record.direction == "internal":
            return
        key = (record.pbx, record.linkedid)
        if change.kind == "ended":
            self._live.pop(key, None)
            finished = self._finished.pop((record.pbx, record.linkedid, id(record)), None)
            if finished is None:
                (finished,) = await self._finish_records([record])
            self._announce(record, finished)
            return
        cached = self._live.get(key)
        if cached is None and record.customer_number:
            cached = await self.identify(record)
            self._remember(key, cached)
        if cached is not None:
            change.client = cached[0]
            if record.client_id is None:  # a card chosen up front (click-to-call) is kept
                record.client_id = cached[1]

    async def reconcile(self, before: datetime, *, chunk: int = 200) -> int:
        """The CRM work of calls that ended, were saved, and never got it (the bridge died in
        between), last saved before `before` (this process's start: later ones are the live
        pipeline's). Returns how many calls were done."""
        count = 0
        while True:
            async with self.engine.connect() as conn:
                pending = await ended_without_crm(conn, before, chunk)
            if not pending:
                break
            for record, finished in await self._finish_ended(pending):
                self._announce(record, finished)
            count += len(pending)
        if count:
            event(log, logging.WARNING, "crm.reconciled", calls=count)
        return count

    def _remember(self, key: tuple[str, str],
                  found: tuple[dict[str, Any] | None, int | None, bool]) -> None:
        self._live[key] = found
        while len(self._live) > MAX_LIVE_CALLS:
            self._live.pop(next(iter(self._live)))

    async def identify(self, record: CallRecord) -> tuple[dict[str, Any] | None, int | None, bool]:
        """The screen pop: the matched card's summary (and, with no card, the external CRM's)."""
        match, summary = await self.lookup.screen_pop(record.customer_number)
        if match.client is not None and summary is not None:
            return dict(summary), match.client.id, match.ambiguous
        if self.external_lookup is not None and match.e164:
            found = await self._external_lookup(match.e164)
            if found is not None:
                pop = {
                    "id": None,
                    "name": found.get("name"),
                    "company": found.get("company"),
                    "responsible": found.get("responsible"),
                    "phones": [{"e164": match.e164, "raw": match.e164}],
                    "tags": [],
                    "ambiguous": False,
                    "external": found.get("kommo", found),
                }
                return pop, None, False
        return None, None, False

    async def _external_lookup(self, e164: str) -> dict[str, Any] | None:
        assert self.external_lookup is not None
        try:
            return await asyncio.wait_for(
                self.external_lookup(e164), self.settings.crm.external_lookup_timeout
            )
        except Exception as exc:  # the screen pop goes on without the external card
            event(log, logging.WARNING, "crm.external_lookup_failed", error=str(exc) or type(exc).__name__)
            return None

    async def finish(self, record: CallRecord) -> Resolution:
        """One ended call's card work, in its own transaction, announced."""
        (finished,) = await self._finish_records([record])
        self._announce(record, finished)
        return finished.resolution

    async def _finish_ended(self, ended: Sequence[CallRecord]
                            ) -> list[tuple[CallRecord, Finished]]:
        """Ended calls of any direction in one transaction: internal ones have no CRM work and
        are only marked done; the others are finished, and returned with their results."""
        records = [r for r in ended if r.direction != "internal"]
        internal = [r for r in ended if r.direction == "internal"]
        done = await self._finish_records(records, nothing_to_do=internal)
        return list(zip(records, done, strict=True))

    async def _finish_records(self, records: Sequence[CallRecord], *,
                              nothing_to_do: Sequence[CallRecord] = ()) -> list[Finished]:
        """The card work of these ended calls, in order, in one transaction (run again as a
        whole when a concurrent writer claimed a new number first). `nothing_to_do`: ended
        calls with no CRM work (internal), marked done in the same transaction."""
        facts = [call_facts(r) for r in records]
        # A card chosen before the call (click-to-call with a client id) wins over matching.
        presets = [r.client_id for r in records]

        async def work(conn: AsyncConnection) -> list[Finished]:
            now = self.clock()
            for record in nothing_to_do:
                await conn.execute(sa.update(calls).where(self._call_row(record))
                                   .values(crm_done_at=now))
            return [await self._finish_one(conn, record, fact, preset, now)
                    for record, fact, preset in zip(records, facts, presets, strict=True)]

        done = await run_claiming(self.engine, work)
        for record, finished in zip(records, done, strict=True):
            record.client_id = finished.resolution.client_id
        return done

    async def _finish_one(self, conn: AsyncConnection, record: CallRecord, facts: CallFacts,
                          preset: int | None, now: datetime) -> Finished:
        res = await self._preset(conn, preset, facts)
        if res is None:
            res = await resolve_or_create(conn, facts, self.policy, self.match, now)
        responsible: str | None = None
        if res.client_id is not None:
            await attach_call(conn, res.client_id, facts)
            if res.match is not None and res.match.client is not None:
                responsible = res.match.client.responsible
        changed: list[int] = []
        if facts.answered:
            changed = await crm_tasks.close_call_backs(
                conn, client_id=res.client_id, number=res.e164, call_id=facts.call_id, now=now
            )
        elif facts.missed:
            crm = self.settings.crm
            who = crm_tasks.call_back_assignees(responsible, record.operators_rung,
                                                crm.callback_group or None)
            opened = await crm_tasks.create_call_back(
                conn,
                client_id=res.client_id,
                number=res.e164,
                assignee=who[0] if who else None,
                assignees=who,
                call_id=facts.call_id,
                now=now,
                due_at=(facts.ended_at or now) + timedelta(minutes=crm.callback_due_minutes),
            )
            changed = [opened] if opened is not None else []
        touched = [t for t in [await crm_tasks.get_task(conn, i) for i in changed] if t is not None]
        card = res.card  # when created: the CRM's contact item and the client.created message
        enqueued = len(await self._enqueue(conn, facts, res, card, now)) if self.external else 0
        if self.planner is not None:
            enqueued += await self.planner.ended(conn, record, facts, res, now)
        await conn.execute(
            sa.update(calls)
            .where(self._call_row(record))
            .values(client_id=res.client_id, client_ambiguous=res.ambiguous, crm_done_at=now)
        )
        return Finished(res, enqueued, card, touched)

    def _announce(self, record: CallRecord, finished: Finished) -> None:
        """After the commit: wake the outbox, say that a card was created."""
        res = finished.resolution
        if finished.enqueued and self.outbox_wake is not None:
            self.outbox_wake.set()
        if self.bus is not None:
            for task in finished.tasks:
                self.bus.publish(task_message(task, self.settings.crm.callback_group))
        if res.created:
            event(log, logging.INFO, "crm.card_created", client_id=res.client_id, linkedid=record.linkedid)
            if self.bus is not None and finished.card is not None:
                card = finished.card
                self.bus.publish(make_message("client.created", [card["responsible"]],
                                              client=card, call_id=record.id))

    async def _preset(
        self, conn: AsyncConnection, client_id: int | None, facts: CallFacts
    ) -> Resolution | None:
        if client_id is None:
            return None
        match = await match_number(conn, facts.customer_number, self.match)
        if match.client_id == client_id:
            return Resolution(client_id, False, match.ambiguous, match.e164, match)
        if not await card_exists(conn, client_id):
            return None
        return Resolution(client_id, False, False, match.e164, None)

    @staticmethod
    def _call_row(record: CallRecord) -> Any:
        if record.id is not None:
            return calls.c.id == record.id
        return sa.and_(calls.c.pbx == record.pbx, calls.c.linkedid == record.linkedid)

    async def _enqueue(
        self, conn: AsyncConnection, facts: CallFacts, res: Resolution, card: Card | None,
        now: datetime
    ) -> list[int]:
        if res.e164:
            client_key = f"phone:{res.e164}"
        elif res.client_id is not None:
            client_key = f"client:{res.client_id}"
        elif facts.customer_number:
            # A number the phone library rejects (an unassigned range, a garbled caller ID) gets
            # no card, but it is still a call the CRM must see: keyed, and sent, as it came.
            client_key = f"number:{facts.customer_number}"
        else:
            return []
        out = []
        if card is not None:
            out.append(
                await enqueue(
                    conn,
                    client_key,
                    KIND_CONTACT,
                    {
                        "client_id": res.client_id,
                        "name": card["name"],
                        "phone": res.e164,
                        "company": card["company"],
                        "source": card["source"],
                        "responsible": card["responsible"],
                    },
                    now,
                )
            )
        payload = call_payload(facts)
        payload.update({"client_id": res.client_id, "phone": res.e164, "call_id": facts.call_id})
        if res.e164 or res.client_id is not None:
            payload.pop("customer_number", None)
        payload.pop("missed", None)
        out.append(await enqueue(conn, client_key, KIND_CALL, payload, now))
        return out
