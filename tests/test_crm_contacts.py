"""New-contact policies, the CRM call hook over the traces' call records, timeline and call-back
tasks, and exactly one card under real concurrency — on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_sync import cards, tasks, timeline
from crm_sync.cards import CardInput
from crm_sync.contacts import CallFacts, ContactPolicy, Policy, resolve_or_create, run_claiming, should_create
from crm_sync.matching import MatchSettings
from crm_sync.schema import clients, phone_claims, timeline_entries
from crm_sync.schema import tasks as tasks_table
from pbx_bridge.bus import EventBus
from pbx_bridge.calls.changes import CallChange
from pbx_bridge.calls.record import CallRecord
from pbx_bridge.clients.hook import CrmHook, call_facts
from pbx_bridge.config import Settings
from pbx_bridge.db.engine import make_engine
from pbx_bridge.db.schema import calls
from tests.crm_trace_records import BASE, replay, save_call, trace_records

RU = MatchSettings()
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def facts(direction: str, status: str, talk: float = 0.0) -> CallFacts:
    return CallFacts(
        call_id=1,
        direction=direction,
        status=status,
        customer_number="+74951234567",
        customer_name=None,
        did=None,
        operator="101",
        started_at=T0,
        talk_seconds=talk,
    )


@pytest.mark.parametrize(
    ("policy", "call", "expected"),
    [
        ("every", facts("inbound", "no_answer"), True),
        ("every", facts("inbound", "answered", 1), True),
        ("answered", facts("inbound", "no_answer"), False),
        ("answered", facts("inbound", "busy"), False),
        ("answered", facts("inbound", "answered", 1), True),
        ("min_talk", facts("inbound", "answered", 9.9), False),
        ("min_talk", facts("inbound", "answered", 10.0), True),
        ("min_talk", facts("inbound", "no_answer"), False),
        ("never", facts("inbound", "answered", 100), False),
        ("every", facts("internal", "answered", 100), False),
    ],
)
def test_inbound_policy(policy: Policy, call: CallFacts, expected: bool) -> None:
    assert (
        should_create(ContactPolicy(inbound=policy, outbound="never", min_talk_seconds=10), call) is expected
    )


@pytest.mark.parametrize(
    ("policy", "status", "talk", "expected"),
    [
        ("every", "no_answer", 0, True),
        ("answered", "no_answer", 0, False),
        ("answered", "answered", 3, True),
        ("min_talk", "answered", 3, False),
        ("min_talk", "answered", 30, True),
        ("never", "answered", 30, False),
    ],
)
def test_outbound_policy(policy: str, status: str, talk: float, expected: bool) -> None:
    policy_obj = ContactPolicy(inbound="never", outbound=policy, min_talk_seconds=10)  # type: ignore[arg-type]
    assert should_create(policy_obj, facts("outbound", status, talk)) is expected


def crm_settings(
    settings: Settings, inbound: str = "every", outbound: str = "answered", min_talk: float = 10.0
) -> Settings:
    settings.crm.inbound_policy = inbound  # type: ignore[assignment]
    settings.crm.outbound_policy = outbound  # type: ignore[assignment]
    settings.crm.min_talk_seconds = min_talk
    settings.crm.did_sources = {"74951110000": "Yandex Direct", "+7 (495) 111-22-22": "website"}
    settings.crm.callback_group = "sales-team"
    return settings


async def card_numbers(engine: AsyncEngine) -> dict[str, dict[str, object]]:
    out = {}
    async with engine.connect() as conn:
        for cid in (await conn.execute(sa.select(clients.c.id).order_by(clients.c.id))).scalars():
            card = await cards.get_card(conn, cid)
            assert card is not None
            for p in card["phones"]:
                assert p["e164"] is not None
                out[p["e164"]] = dict(card)
    return out


# Per policy (inbound, outbound, min_talk): which customers' numbers get a card after all traces.
POLICY_CASES = {
    "every/answered": (
        "every",
        "answered",
        10.0,
        {
            "+74951234567",
            "+79161234567",
            "+79161112233",
            "+74957654321",
            "+74991234567",
            "+74959876543",
            "+79035550199",
        },
    ),
    "answered/answered": (
        "answered",
        "answered",
        10.0,
        {"+74951234567", "+74957654321", "+74991234567", "+74959876543", "+79035550199"},
    ),
    "min_talk 5 s/min_talk 5 s": (
        "min_talk",
        "min_talk",
        5.0,
        {"+74991234567", "+74959876543", "+79035550199"},
    ),
    "never/never": ("never", "never", 10.0, set()),
    "every/never": (
        "every",
        "never",
        10.0,
        {"+74951234567", "+79161234567", "+79161112233", "+74957654321", "+74991234567"},
    ),
}


@pytest.mark.parametrize("case", list(POLICY_CASES))
async def test_traces_replayed_cards_created_per_policy(
    engine: AsyncEngine, settings: Settings, case: str
) -> None:
    inbound, outbound, min_talk, expected = POLICY_CASES[case]
    hook = CrmHook(engine, crm_settings(settings, inbound, outbound, min_talk))
    records = trace_records()
    for record in records.values():
        await replay(engine, hook, record)
    created = await card_numbers(engine)
    assert set(created) == expected
    async with engine.connect() as conn:
        n_cards = (await conn.execute(sa.select(sa.func.count()).select_from(clients))).scalar_one()
        rows = {r.linkedid: r for r in await conn.execute(sa.select(calls))}
    assert n_cards == len(expected)  # exactly one card per number, however many calls it made
    for name, record in records.items():
        row = rows[record.linkedid]
        number = record.customer_number
        want = created[number]["id"] if number in created else None
        assert row.client_id == want, name
        assert row.client_ambiguous is False


async def test_new_cards_named_sourced_and_assigned(engine: AsyncEngine, settings: Settings) -> None:
    hook = CrmHook(engine, crm_settings(settings))
    for record in trace_records().values():
        await replay(engine, hook, record)
    by_number = await card_numbers(engine)
    ivan = by_number["+74951234567"]
    assert (ivan["name"], ivan["source"], ivan["responsible"]) == ("Ivan Petrov", "Yandex Direct", "101")
    assert ivan["auto_created"] is True
    noname = by_number["+79161234567"]  # no caller-ID name: the formatted number; DID in another format
    assert (noname["name"], noname["source"], noname["responsible"]) == ("8 (916) 123-45-67", "website", None)
    olga = by_number["+74957654321"]  # ring-all queue: answered by 102; DID not in the map
    assert (olga["name"], olga["source"], olga["responsible"]) == ("Olga", None, "102")
    outbound = by_number["+74959876543"]
    assert (outbound["name"], outbound["source"], outbound["responsible"]) == (
        "8 (495) 987-65-43",
        None,
        "101",
    )


async def test_traces_with_cards_present(engine: AsyncEngine, settings: Settings) -> None:
    """Existing cards are matched (never duplicated), calls land on their timelines, the screen pop
    carries the card while it rings."""
    async with engine.begin() as conn:
        ivan = await cards.create_card(
            conn,
            CardInput(
                name="Иван Петров (VIP)",
                phones=["8 495 123-45-67"],
                company="Ромашка",
                responsible="103",
                tags=["vip"],
            ),
            RU,
            T0,
        )
        anna = await cards.create_card(conn, CardInput(name="Anna", phones=["+7 499 123 45 67"]), RU, T0)
    hook = CrmHook(engine, crm_settings(settings, "answered", "never"))
    records = trace_records()
    pops: dict[str, object] = {}
    for name, record in records.items():
        changes = await replay(engine, hook, record)
        ringing = [c for c in changes if c.kind == "ringing"]
        if ringing:
            pops[name] = ringing[0].client
            if ringing[0].client is not None:
                assert ringing[0].record.client_id == ringing[0].client["id"]
    assert pops["inbound_answered"] == {
        "id": ivan,
        "name": "Иван Петров (VIP)",
        "company": "Ромашка",
        "responsible": "103",
        "phones": [{"e164": "+74951234567", "raw": "8 495 123-45-67"}],
        "tags": ["vip"],
        "ambiguous": False,
        "last_call": None,
        "open_tasks": [],
    }
    assert pops["inbound_noanswer"] is None  # unknown caller: no card to pop
    assert pops["internal_call"] is None
    async with engine.connect() as conn:
        n = (await conn.execute(sa.select(sa.func.count()).select_from(clients))).scalar_one()
        ivan_calls = await timeline.list_timeline(conn, ivan)
        anna_calls = await timeline.list_timeline(conn, anna)
        card = await cards.get_card(conn, ivan)
    assert n == 3  # ivan, anna + Olga (the only other answered inbound number; outbound: never)
    assert [e["payload"]["linkedid"] for e in ivan_calls if e["kind"] == "call"] == [
        "sip_inbound_answered_recorded-linkedid",
        "inbound_answered_recorded-linkedid",
        "inbound_answered-linkedid",
    ]
    first = next(e for e in ivan_calls if e["payload"].get("linkedid") == "inbound_answered-linkedid")
    assert first["payload"]["direction"] == "inbound" and first["payload"]["status"] == "answered"
    assert first["payload"]["operator"] == "101"
    assert first["payload"]["wait_seconds"] == pytest.approx(2.0) and first["payload"][
        "talk_seconds"
    ] == pytest.approx(4.9)
    assert [e["payload"]["linkedid"] for e in anna_calls] == ["resync_mid_call-linkedid"]
    assert card is not None and card["responsible"] == "103"  # a matched card keeps its manager
    assert card["last_activity_at"] > card["created_at"]


async def test_missed_call_opens_task_and_answered_call_closes_it(
    engine: AsyncEngine, settings: Settings
) -> None:
    hook = CrmHook(engine, crm_settings(settings))
    records = trace_records()
    missed = records["inbound_noanswer"]
    await replay(engine, hook, missed)
    async with engine.connect() as conn:
        open_tasks = await tasks.list_tasks(conn, status="open")
    assert len(open_tasks) == 1
    task = open_tasks[0]
    card_id = task["client_id"]
    assert card_id is not None
    # New card, nobody responsible yet: the operator the call rang gets it (not the group), due
    # crm.callback_due_minutes after the call.
    got = (task["kind"], task["assignee"], task["assignees"], task["number"], task["created_by_call_id"])
    assert got == (
        "call_back",
        missed.operators_rung[0],
        missed.operators_rung,
        "+79161234567",
        missed.id,
    )
    assert task["due_at"] is not None and missed.ended_at is not None
    due = datetime.fromisoformat(task["due_at"].replace("Z", "+00:00")).timestamp()
    assert due == pytest.approx(missed.ended_at + 15 * 60, abs=1)
    # The same missed call replayed (e.g. after a restart) adds nothing.
    await hook.on_change(CallChange("ended", missed))
    # A second missed call while the task is open: on the timeline, no second task.
    second = replace(
        missed,
        linkedid="second-miss",
        started_at=missed.started_at + 600,
        ended_at=(missed.ended_at or 0) + 600,
    )
    await replay(engine, hook, second)
    # Later the client calls again and is answered: the task closes by itself.
    later = replace(
        missed,
        linkedid="later-answered",
        started_at=missed.started_at + 3600,
        status="answered",
        operator="102",
        answered_at=missed.started_at + 3602,
        ended_at=missed.started_at + 3650,
    )
    await replay(engine, hook, later)
    async with engine.connect() as conn:
        all_tasks = await tasks.list_tasks(conn)
        entries = await timeline.list_timeline(conn, card_id)
        n_cards = (await conn.execute(sa.select(sa.func.count()).select_from(clients))).scalar_one()
    assert n_cards == 1
    assert len(all_tasks) == 1
    assert all_tasks[0]["status"] == "closed" and all_tasks[0]["closed_by_call_id"] == later.id
    kinds = [(e["kind"], e["payload"].get("status")) for e in entries]
    assert kinds == [("call", "answered"), ("call", "no_answer"), ("task", "closed"), ("call", "no_answer")]


async def test_missed_call_of_known_client_goes_to_responsible(
    engine: AsyncEngine, settings: Settings
) -> None:
    async with engine.begin() as conn:
        cid = await cards.create_card(
            conn, CardInput(name="Busy Bee", phones=["+79161112233"], responsible="103"), RU, T0
        )
    hook = CrmHook(engine, crm_settings(settings))
    await replay(engine, hook, trace_records()["inbound_busy"])
    async with engine.connect() as conn:
        (task,) = await tasks.list_tasks(conn, client_id=cid)
    assert task["assignee"] == "103" and task["status"] == "open"
    async with engine.begin() as conn:
        closed = await tasks.close_task(conn, task["id"], T0)
        assert closed["status"] == "closed" and closed["closed_by_call_id"] is None
        with pytest.raises(tasks.TaskNotFound):
            await tasks.close_task(conn, 9999, T0)


async def test_missed_call_without_card_still_gets_task(engine: AsyncEngine, settings: Settings) -> None:
    """Policy "answered": a missed call from a new number makes no card, but it is not forgotten."""
    hook = CrmHook(engine, crm_settings(settings, "answered"))
    await replay(engine, hook, trace_records()["inbound_noanswer"])
    async with engine.connect() as conn:
        (task,) = await tasks.list_tasks(conn, status="open")
    assert task["client_id"] is None and task["number"] == "+79161234567"
    assert task["assignee"] == trace_records()["inbound_noanswer"].operators_rung[0]
    later = replace(
        trace_records()["inbound_noanswer"],
        linkedid="later",
        status="answered",
        operator="101",
        answered_at=BASE + 7200,
        started_at=BASE + 7190,
        ended_at=BASE + 7300,
    )
    await replay(engine, hook, later)
    async with engine.connect() as conn:
        (task,) = await tasks.list_tasks(conn)
        card_id = (await conn.execute(sa.select(clients.c.id))).scalar_one()
    assert task["status"] == "closed" and task["closed_by_call_id"] == later.id
    assert card_id is not None


async def test_ended_replayed_is_idempotent(engine: AsyncEngine, settings: Settings) -> None:
    hook = CrmHook(engine, crm_settings(settings))
    record = trace_records()["inbound_answered"]
    await replay(engine, hook, record)
    await hook.finish(record)
    await hook.finish(record)
    async with engine.connect() as conn:
        n_entries = (
            await conn.execute(sa.select(sa.func.count()).select_from(timeline_entries))
        ).scalar_one()
        n_cards = (await conn.execute(sa.select(sa.func.count()).select_from(clients))).scalar_one()
    assert (n_entries, n_cards) == (1, 1)


async def test_timeline_links_added_later(engine: AsyncEngine, settings: Settings) -> None:
    hook = CrmHook(engine, crm_settings(settings))
    record = trace_records()["inbound_answered_recorded"]
    await replay(engine, hook, record)
    assert record.id is not None and record.client_id is not None
    async with engine.begin() as conn:
        ids = await timeline.add_timeline_link(
            conn, record.id, "recording", {"url": "/api/v1/recordings/1", "seconds": 5.9}, T0
        )
        assert len(ids) == 1
        await timeline.add_timeline_link(conn, record.id, "transcript", {"url": "/api/v1/transcripts/1"}, T0)
        assert await timeline.add_timeline_link(conn, 424242, "recording", {"url": "x"}, T0) == []
        with pytest.raises(timeline.TimelineError):
            await timeline.add_timeline_link(conn, record.id, "video", {}, T0)  # type: ignore[arg-type]
        await timeline.add_note(conn, record.client_id, "asked for a quote", T0, author="101")
        with pytest.raises(timeline.TimelineError, match="empty"):
            await timeline.add_note(conn, record.client_id, "  ", T0)
    # Re-attaching the call (a replayed end) keeps the links.
    await hook.finish(record)
    async with engine.connect() as conn:
        entries = await timeline.list_timeline(conn, record.client_id)
    by_kind = {e["kind"]: e for e in entries}
    assert set(by_kind) == {"call", "recording", "transcript", "note"}
    assert by_kind["call"]["payload"]["links"] == {
        "recording": {"url": "/api/v1/recordings/1", "seconds": 5.9},
        "transcript": {"url": "/api/v1/transcripts/1"},
    }
    assert by_kind["note"]["payload"] == {"text": "asked for a quote", "author": "101"}


async def test_client_created_published_on_bus(engine: AsyncEngine, settings: Settings) -> None:
    bus = EventBus()
    sub = bus.subscribe()
    hook = CrmHook(engine, crm_settings(settings), bus=bus)
    await replay(engine, hook, trace_records()["queue_ringall_answered"])
    message = sub.queue.get_nowait()
    assert message is not None and message["type"] == "client.created"
    assert message["client"]["name"] == "Olga"
    # The live-events envelope, so operators' filtered streams receive it too.
    assert "at" in message and message["extensions"] == [message["client"]["responsible"]]


async def _finish_with_own_engine(db_url: str, settings: Settings, record: CallRecord) -> int | None:
    engine = make_engine(db_url)
    try:
        hook = CrmHook(engine, settings)
        res = await hook.finish(record)
        return res.client_id
    finally:
        await engine.dispose()


async def test_simultaneous_calls_from_new_number_create_one_card(
    engine: AsyncEngine, settings: Settings, db_url: str
) -> None:
    """Real concurrency: independent engines (connections), their transactions racing."""
    crm_settings(settings)
    base = trace_records()["inbound_noanswer"]
    for round_ in range(4):
        number = f"+7916555{round_:04d}"
        records = [replace(base, linkedid=f"race-{round_}-{i}", customer_number=number) for i in range(6)]
        for r in records:
            await save_call(engine, r)
        ids = await asyncio.gather(*(_finish_with_own_engine(db_url, settings, r) for r in records))
        assert len(set(ids)) == 1 and ids[0] is not None, ids
        async with engine.connect() as conn:
            n = (
                await conn.execute(
                    sa.select(sa.func.count())
                    .select_from(clients)
                    .where(
                        clients.c.id.in_(
                            sa.select(phone_claims.c.client_id).where(phone_claims.c.e164 == number)
                        )
                    )
                )
            ).scalar_one()
            rows = (
                await conn.execute(sa.select(calls.c.client_id).where(calls.c.customer_number == number))
            ).all()
            n_tasks = (
                await conn.execute(
                    sa.select(sa.func.count()).select_from(tasks_table).where(tasks_table.c.number == number)
                )
            ).scalar_one()
        assert n == 1
        assert {r.client_id for r in rows} == {ids[0]}
        assert n_tasks == 1  # one open call-back however many missed calls raced


async def test_claim_constraint_loser_rereads_winner(engine: AsyncEngine, db_url: str) -> None:
    """Deterministic interleaving: B tries to create while A's card is written but not committed;
    B fails on the constraint and, run again, finds A's card."""
    policy = ContactPolicy()
    call = CallFacts(
        call_id=None,
        direction="inbound",
        status="no_answer",
        customer_number="+74951230000",
        customer_name=None,
        did=None,
        operator=None,
        started_at=T0,
    )
    other = make_engine(db_url)
    try:
        async with engine.connect() as a:
            trans = await a.begin()
            won = await resolve_or_create(a, call, policy, RU, T0)
            assert won.created

            async def b() -> int | None:
                async with other.begin() as conn:
                    return (await resolve_or_create(conn, call, policy, RU, T0)).client_id

            attempt = asyncio.ensure_future(b())
            await asyncio.sleep(0.5)
            assert not attempt.done()  # B waits for A (row lock on PostgreSQL, write lock on SQLite)
            await trans.commit()
            with pytest.raises(sa.exc.IntegrityError):
                await attempt
        again = await run_claiming(other, lambda conn: resolve_or_create(conn, call, policy, RU, T0))
        assert again.client_id == won.client_id and not again.created
    finally:
        await other.dispose()


async def test_call_facts_from_record() -> None:
    record = trace_records()["inbound_answered"]
    f = call_facts(record)
    assert f.started_at.tzinfo is not None and f.talk_seconds == pytest.approx(4.9)
    assert f.answered and not f.missed


async def test_click_to_call_with_client_id_lands_on_that_card(
    engine: AsyncEngine, settings: Settings
) -> None:
    """The CRM placed the call from a card (click-to-call with a client id): that card gets the
    call even though the number dialled is not on it, and no other card is created."""
    async with engine.begin() as conn:
        chosen = await cards.create_card(conn, CardInput(name="Chosen", phones=["+74950000001"]), RU, T0)
    hook = CrmHook(engine, crm_settings(settings, outbound="every"))
    record = replace(trace_records()["click_to_call"], client_id=chosen)
    await replay(engine, hook, record)
    async with engine.connect() as conn:
        n_cards = (await conn.execute(sa.select(sa.func.count()).select_from(clients))).scalar_one()
        row = (await conn.execute(sa.select(calls.c.client_id).where(calls.c.id == record.id))).one()
        entries = await timeline.list_timeline(conn, chosen)
    assert n_cards == 1 and row.client_id == chosen
    assert [e["payload"]["linkedid"] for e in entries] == ["click_to_call-linkedid"]
    # A stale id (card deleted since) falls back to matching / the policy.
    stale = replace(trace_records()["outbound_answered"], client_id=chosen + 1000)
    await replay(engine, hook, stale)
    async with engine.connect() as conn:
        n_cards = (await conn.execute(sa.select(sa.func.count()).select_from(clients))).scalar_one()
    assert n_cards == 2 and stale.client_id not in (None, chosen + 1000)


async def test_a_batch_of_ended_calls_is_one_transaction_with_the_same_results(
    engine: AsyncEngine, settings: Settings
) -> None:
    """prepare() does the card work of every ended call of a saved batch in one transaction
    (one commit, not one per call); on_change then applies it in order. Two calls of the batch
    from the same new number still make one card, and client.created goes out once."""
    bus = EventBus()
    hook = CrmHook(engine, crm_settings(settings), bus=bus)
    recs = trace_records()
    first, busy = recs["inbound_noanswer"], recs["inbound_busy"]
    again = replace(first, linkedid="same-number-again", started_at=first.started_at + 30,
                    ended_at=(first.ended_at or 0) + 30)
    batch = []
    for record in (first, busy, again):
        await save_call(engine, record)
        batch.append(CallChange("ended", record))
    commits: list[int] = []

    def count(_conn: object) -> None:
        commits.append(1)

    sa.event.listen(engine.sync_engine, "commit", count)
    created = bus.subscribe(lambda m: m["type"] == "client.created")
    try:
        await hook.prepare(batch)
        assert len(commits) == 1
        for change in batch:
            await hook.on_change(change)
        assert len(commits) == 1  # nothing left to do per change
    finally:
        sa.event.remove(engine.sync_engine, "commit", count)
    async with engine.connect() as conn:
        owners = dict((await conn.execute(sa.select(calls.c.linkedid, calls.c.client_id))).all())
        n_cards = (await conn.execute(sa.select(sa.func.count()).select_from(clients))).scalar_one()
        open_tasks = await tasks.list_tasks(conn, status="open")
    assert n_cards == 2
    assert owners[first.linkedid] == owners[again.linkedid] != owners[busy.linkedid]
    assert [c.record.client_id for c in batch] == [owners[r.linkedid] for r in (first, busy, again)]
    assert sorted(t["number"] for t in open_tasks) == sorted({"+79161234567", busy.customer_number or ""})
    published = [created.queue.get_nowait() for _ in range(created.queue.qsize())]
    assert sorted(m["client"]["id"] for m in published) == sorted({owners[first.linkedid],
                                                                   owners[busy.linkedid]})


async def test_a_created_card_is_answered_as_it_reads_back(engine: AsyncEngine, settings: Settings) -> None:
    """The pipeline publishes the card it just created without reading it back: what it
    publishes must be exactly what get_card reads."""
    facts = call_facts(trace_records()["inbound_answered"])
    policy = ContactPolicy(did_sources={"+74951110000": "Yandex Direct"})

    async def work(conn: sa.ext.asyncio.AsyncConnection) -> tuple[object, object]:
        res = await resolve_or_create(conn, facts, policy, RU, T0)
        assert res.created and res.client_id is not None
        return res.card, await cards.get_card(conn, res.client_id)

    made, read = await run_claiming(engine, work)
    assert made == read
    assert isinstance(made, dict) and made["source"] == "Yandex Direct" and made["phone_count"] == 1


async def test_crm_work_left_undone_by_a_dead_bridge_is_done_at_the_next_start(
    engine: AsyncEngine, settings: Settings
) -> None:
    """Calls saved as ended whose CRM work never ran (the bridge died in between) get it from
    reconcile(): card, timeline, call-back task; once. Calls saved after this process started
    are the live pipeline's and are left to it."""
    recs = trace_records()
    missed, answered = recs["inbound_noanswer"], recs["inbound_answered"]
    for record in (missed, answered):
        await save_call(engine, record)  # saved; the hooks never ran
    hook = CrmHook(engine, crm_settings(settings))
    started = datetime.now(UTC)
    later = replace(recs["inbound_busy"])
    await save_call(engine, later)  # saved by this process after its start: not reconcile's
    async with engine.begin() as conn:
        await conn.execute(sa.update(calls).where(calls.c.linkedid == later.linkedid)
                           .values(updated_at=datetime(2100, 1, 1, tzinfo=UTC)))
    assert await hook.reconcile(started) == 2
    assert await hook.reconcile(started) == 0
    async with engine.connect() as conn:
        rows = {r.linkedid: r for r in await conn.execute(sa.select(calls))}
        open_tasks = await tasks.list_tasks(conn, status="open")
        n_cards = (await conn.execute(sa.select(sa.func.count()).select_from(clients))).scalar_one()
    assert rows[missed.linkedid].crm_done_at is not None and rows[answered.linkedid].crm_done_at is not None
    assert rows[later.linkedid].crm_done_at is None
    assert rows[missed.linkedid].client_id is not None and rows[answered.linkedid].client_id is not None
    assert n_cards == 2
    assert [t["number"] for t in open_tasks] == [missed.customer_number]
    # The pipeline's own path marks its calls done as well.
    await replay(engine, hook, replace(missed, linkedid="through-the-pipeline"))
    async with engine.connect() as conn:
        done = (await conn.execute(sa.select(calls.c.crm_done_at)
                                   .where(calls.c.linkedid == "through-the-pipeline"))).scalar_one()
    assert done is not None


async def test_a_call_that_rings_and_ends_in_one_batch_pops_as_it_rang(
    engine: AsyncEngine, settings: Settings
) -> None:
    """The batch step creates the new caller's card at the hang-up; the ringing change of the
    same batch must still pop "new contact" (no card when the phone rang), not that card."""
    hook = CrmHook(engine, crm_settings(settings))
    record = trace_records()["inbound_busy"]
    await save_call(engine, record)
    live = replace(record, status=None, ended_at=None)
    batch = [CallChange("started", live), CallChange("ringing", live, extension="101"),
             CallChange("ended", record)]
    await hook.prepare(batch)
    for change in batch:
        await hook.on_change(change)
    assert batch[1].client is None  # the screen pop: an unknown caller
    assert record.client_id is not None  # the card made at the end of the call
