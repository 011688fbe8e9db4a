"""Upgrades from every released schema lose nothing.

For each released schema a fixture database is built here, reproducibly: an empty database is
migrated with Alembic to that release's revision (the migration files never change once
released), then filled with plain SQL written against that schema as it was (column names of
that time, no current table definitions): calls with legs, client cards with phones, e-mails,
timeline and tasks, the CRM outbox (pending and dead), recordings, transcription jobs and
transcripts, API tokens, web users and sessions, click-to-call requests. It is then upgraded to
the head and checked twice: every row of every table holds the same values in the same columns,
and the current code reads them back (call records, cards, a token that still authenticates, a
password that still signs in, the transcript, the outbox).

Built rather than committed as a binary file: the migrations themselves are the released
artefact, SQL inserts review like code, and one builder serves SQLite and PostgreSQL.

Released schemas: 0008_crm_done (the first version that landed: call log, CRM, API, recordings,
transcription, web UI, journal) and 0009_cel_standby (CEL backfill and hot standby). When a
release ships a new schema, add its revision to RELEASED with what it added.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from crm_sync import outbox
from crm_sync.cards import get_card
from crm_sync.tasks import list_tasks
from pbx_bridge.auth.tokens import TokenVerifier, hash_token
from pbx_bridge.calls import store
from pbx_bridge.db import migrate
from pbx_bridge.db.engine import make_engine
from pbx_bridge.web.passwords import hash_password
from pbx_bridge.web.users import authenticate
from recordings.transcription.store import load_transcript
from tests.conftest import _pg_admin, _pg_url

pytestmark = pytest.mark.timeout(180)

T0 = datetime(2026, 11, 20, 10, 0, 0, 250000, tzinfo=UTC)
TOKEN = "pbxb_upgrade-fixture-token-0123456789abcdefghijklmnopqrstuv"
PASSWORD = "correct horse battery"
# Tables whose rows are not data (FTS shadow tables are rebuilt from transcripts).
NOT_DATA = {"alembic_version"}


class Filler:
    """Plain SQL on one connection, with values as the backend stores them."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.sqlite = conn.dialect.name == "sqlite"

    def ts(self, offset: float = 0.0) -> Any:
        value = T0 + timedelta(seconds=offset)
        # SQLite keeps naive UTC text, as the UtcDateTime columns write it.
        return value.replace(tzinfo=None).isoformat(sep=" ") if self.sqlite else value

    async def insert(self, table: str, **values: Any) -> None:
        columns = ", ".join(values)
        params = ", ".join(f":{k}" for k in values)
        encoded = {k: json.dumps(v, ensure_ascii=False) if isinstance(v, list | dict) else v
                   for k, v in values.items()}
        await self.conn.execute(sa.text(f"INSERT INTO {table} ({columns}) VALUES ({params})"), encoded)


async def fill_0008(f: Filler) -> None:
    """The schema as of 0008_crm_done."""
    ts = f.ts
    await f.insert("clients", id=1, name="Анна Петрова", name_key="анна петрова", company="ООО Ромашка",
                   responsible="101", source="Yandex Direct", tags=["vip"], notes="звонить утром",
                   auto_created=False, created_at=ts(-86400), updated_at=ts(-3600),
                   last_activity_at=ts(60))
    await f.insert("clients", id=2, name="+7 916 555-01-02", name_key="+7 916 555-01-02", tags=[],
                   auto_created=True, created_at=ts(200), updated_at=ts(200), last_activity_at=ts(200))
    await f.insert("client_phones", id=1, client_id=1, e164="+79165550101", raw="8 (916) 555-01-01")
    await f.insert("client_phones", id=2, client_id=2, e164="+79165550102", raw="+79165550102")
    await f.insert("phone_claims", e164="+79165550101", client_id=1, claimed_at=ts(-86400))
    await f.insert("phone_claims", e164="+79165550102", client_id=2, claimed_at=ts(200))
    await f.insert("client_emails", id=1, client_id=1, email="anna@example.ru")
    await f.insert("calls", id=1, pbx="main", linkedid="1732096800.10", state="ended",
                   direction="inbound", status="answered", missed=False, customer_number="+79165550101",
                   customer_name="Анна", did="+74951110000", operator="101", operators_rung=["101", "102"],
                   queue="sales", transfers=[{"kind": "blind", "at": "2026-11-20T10:00:30.250000Z",
                               "from_operator": "101", "to_operator": "102"}],
                   started_at=ts(), answered_at=ts(5), ended_at=ts(65), wait_seconds=5.0,
                   talk_seconds=60.0, client_id=1, client_ambiguous=False, ended_during_outage=False,
                   tags=["keyword:возврат"], legal_hold=True, updated_at=ts(66), crm_done_at=ts(66))
    await f.insert("calls", id=2, pbx="main", linkedid="1732097000.20", state="ended",
                   direction="inbound", status="abandoned", missed=True, customer_number="+79165550102",
                   did="+74951110000", operators_rung=["101"], transfers=[], started_at=ts(200),
                   ended_at=ts(215), wait_seconds=15.0, talk_seconds=0.0, client_id=2,
                   client_ambiguous=False, ended_during_outage=False, tags=[], legal_hold=False,
                   updated_at=ts(216), crm_done_at=ts(216))
    await f.insert("calls", id=3, pbx="main", linkedid="1732097300.30", state="live",
                   direction="outbound", dialled="89161234567", customer_number="+79161234567",
                   operator="103", operators_rung=[], transfers=[], started_at=ts(300),
                   click_to_call_id="0b7e4c1e-1111-4a4a-9c9c-000000000003", client_ambiguous=False,
                   ended_during_outage=False, missed=False, tags=[], legal_hold=False, updated_at=ts(301))
    await f.insert("call_legs", id=1, call_id=1, uniqueid="1732096800.10", channel="PJSIP/trunk-00000001",
                   role="customer", created_at=ts(), answered_at=ts(5), hungup_at=ts(65),
                   hangup_cause="16")
    await f.insert("call_legs", id=2, call_id=1, uniqueid="1732096800.11", channel="PJSIP/101-00000002",
                   role="operator", extension="101", created_at=ts(1), answered_at=ts(5),
                   hungup_at=ts(65), hangup_cause="16")
    await f.insert("timeline_entries", id=1, client_id=1, kind="call", call_id=1,
                   payload={"direction": "inbound", "status": "answered", "talk_seconds": 60.0}, at=ts(65))
    await f.insert("timeline_entries", id=2, client_id=1, kind="recording", call_id=1,
                   payload={"duration_seconds": 60.0}, at=ts(70))
    await f.insert("tasks", id=1, client_id=2, number="+79165550102", kind="callback", assignee="sales",
                   status="open", created_at=ts(215), created_by_call_id=2)
    await f.insert("outbox", id=1, client_key="client:1", kind="call", payload={"call_id": 1},
                   attempts=0, created_at=ts(66), next_attempt_at=ts(66), dead=False)
    await f.insert("outbox", id=2, client_key="client:2", kind="contact", payload={"client_id": 2},
                   attempts=10, created_at=ts(216), next_attempt_at=ts(900), dead=True,
                   last_error="HTTP 422: bad phone")
    await f.insert("api_tokens", id=1, name="our CRM", role="crm", token_hash=hash_token(TOKEN),
                   prefix=TOKEN[:12], created_at=ts(-86400))
    await f.insert("api_tokens", id=2, name="old", role="manager", token_hash="0" * 64, prefix="pbxb_old",
                   created_at=ts(-86400), revoked_at=ts(-3600))
    await f.insert("click_to_call_requests", id="0b7e4c1e-1111-4a4a-9c9c-000000000003", token_id=1,
                   idempotency_key="task-42", extension="103", number="+79161234567",
                   number_entered="8 916 123-45-67", dial="89161234567", pbx="main",
                   channel_id="0b7e4c1e-1111-4a4a-9c9c-000000000003", state="dialing_customer",
                   call_id=3, created_at=ts(299), updated_at=ts(301))
    await f.insert("recordings", id=1, call_id=1, pbx="main", linkedid="1732096800.10", state="ready",
                   rule="did:+74951110000",
                   segments=[{"index": 1, "mode": "stereo", "channel": "PJSIP/101-00000002",
                              "operator": "101", "files": {"raw": "1732096800.10.raw"},
                              "started_at": T0.timestamp() + 5}],
                   stored_path="2026/11/20/1.wav", format="wav", channels=2, sample_rate=8000,
                   duration_seconds=60.0, size_bytes=1920044, sha256="ab" * 32, attempts=1,
                   created_at=ts(5), updated_at=ts(70), ready_at=ts(70))
    await f.insert("transcription_jobs", id=1, call_id=1,
                   wav_path="/var/lib/pbx-bridge/recordings/2026/11/20/1.wav",
                   state="done", attempts=1, next_attempt_at=ts(70), created_at=ts(70),
                   started_at=ts(71), finished_at=ts(90), updated_at=ts(90))
    await f.insert("transcripts", id=1, call_id=1, job_id=1,
                   turns=[{"speaker": "customer", "start": 1.0, "end": 3.5, "text": "хочу вернуть заказ",
                           "words": [{"word": "хочу", "start": 1.0, "end": 1.4, "conf": 0.97}]}],
                   plain_text="хочу вернуть заказ", analytics={"talk_seconds": {"customer": 2.5}},
                   language="ru", model="vosk-model-small-ru-0.22", duration_seconds=60.0, created_at=ts(90))
    await f.insert("web_users", id=1, username="anna", password_hash=hash_password(PASSWORD),
                   role="manager", language="ru", disabled=False, created_at=ts(-86400))
    await f.insert("web_sessions", id="s" * 64, user_id=1, csrf_token="c" * 43, created_at=ts(),
                   last_seen_at=ts(10), expires_at=ts(43200))
    await f.insert("ami_journal_checkpoints", pbx="main", seq=4242, updated_at=ts(300))


async def fill_0009(f: Filler) -> None:
    """0008's data, plus what 0009_cel_standby added: calls rebuilt from CEL, the sweep mark,
    the lease row."""
    await fill_0008(f)
    await f.conn.execute(sa.text("UPDATE calls SET source = 'ami+cel' WHERE id = 2"))
    await f.insert("calls", id=4, pbx="main", linkedid="1732097500.40", state="ended",
                   direction="inbound", status="no_answer", missed=True, customer_number="+79165550101",
                   operators_rung=["101"], transfers=[], started_at=f.ts(500), ended_at=f.ts(530),
                   wait_seconds=30.0, talk_seconds=0.0, client_ambiguous=False, ended_during_outage=False,
                   tags=[], legal_hold=False, updated_at=f.ts(600), source="cel")
    await f.insert("cel_backfill", pbx="main", swept_until=f.ts(540), updated_at=f.ts(600))
    await f.insert("bridge_leader", name="bridge", holder="node-a:123", epoch=7, expires_at=f.ts(603),
                   acquired_at=f.ts(-60), url="http://10.0.0.5:8080/")


RELEASED: dict[str, Callable[[Filler], Awaitable[None]]] = {
    "0008_crm_done": fill_0008,
    "0009_cel_standby": fill_0009,
}


async def _rows(engine: AsyncEngine) -> dict[str, dict[str, Any]]:
    """Every table's rows, by primary key, with every column (as the backend returns it)."""
    def read(conn: sa.Connection) -> dict[str, dict[str, Any]]:
        inspector = sa.inspect(conn)
        out: dict[str, dict[str, Any]] = {}
        for table in inspector.get_table_names():
            if table in NOT_DATA or table.startswith("transcripts_fts"):
                continue
            key = inspector.get_pk_constraint(table)["constrained_columns"]
            rows = conn.execute(sa.text(f"SELECT * FROM {table}")).mappings().all()
            out[table] = {tuple(r[k] for k in key): dict(r) for r in rows}
        return out

    async with engine.connect() as conn:
        return await conn.run_sync(read)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def empty_url(request: pytest.FixtureRequest, tmp_path: Any) -> Any:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'old.sqlite3'}"
        return
    import uuid

    name = f"pbx_bridge_upgrade_{uuid.uuid4().hex[:10]}"
    try:
        await _pg_admin(f'CREATE DATABASE "{name}"')
    except (OSError, sa.exc.DBAPIError) as exc:
        pytest.fail(f"PostgreSQL at 127.0.0.1:5432 is needed: {exc}")
    yield _pg_url(name)
    await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_every_released_revision_is_a_migration_on_the_way_to_head() -> None:
    script = migrate.script_directory()
    head = script.get_current_head()
    assert head is not None
    lineage = [r.revision for r in script.walk_revisions("base", head)]
    for revision in RELEASED:
        assert revision in lineage, revision


@pytest.mark.parametrize("revision", list(RELEASED))
async def test_upgrading_a_released_database_loses_nothing(empty_url: str, revision: str) -> None:
    engine = make_engine(empty_url)
    try:
        await migrate.upgrade(engine, revision)
        async with engine.begin() as conn:
            await RELEASED[revision](Filler(conn))
        assert await migrate.current_revision(engine) == revision
        before = await _rows(engine)
        assert sum(len(rows) for rows in before.values()) >= 25

        await migrate.upgrade(engine)
        assert await migrate.is_up_to_date(engine)
        after = await _rows(engine)
        # Every row, every column it had, the same value.
        for table, rows in before.items():
            assert table in after, f"table {table} is gone"
            for key, row in rows.items():
                assert key in after[table], f"{table} {key} is gone"
                new = after[table][key]
                changed = {c: (v, new.get(c)) for c, v in row.items() if new.get(c) != v}
                assert not changed, (table, key, changed)
            assert len(after[table]) == len(rows), table
        await _read_back_with_the_current_code(engine, revision)
    finally:
        await engine.dispose()


async def _read_back_with_the_current_code(engine: AsyncEngine, revision: str) -> None:
    async with engine.connect() as conn:
        records = {r.id: r for r in await store.list_calls(conn, limit=None)}
        answered = records[1]
        assert (answered.status, answered.operator, answered.talk_seconds, answered.client_id) == \
            ("answered", "101", 60.0, 1)
        assert answered.started_at == pytest.approx(T0.timestamp())
        assert [(t.kind, t.to_operator) for t in answered.transfers] == [("blind", "102")]
        assert records[2].missed and records[3].live and records[3].click_to_call_id
        assert answered.source == "ami" and records[2].source == ("ami+cel" if revision >= "0009" else "ami")
        card = await get_card(conn, 1)
        assert card is not None and card["name"] == "Анна Петрова"
        assert card["emails"] == ["anna@example.ru"] and card["tags"] == ["vip"]
        assert [p["e164"] for p in card["phones"]] == ["+79165550101"]
        tasks = await list_tasks(conn)
        assert [(t["client_id"], t["status"]) for t in tasks] == [(2, "open")]
        transcript = await load_transcript(conn, 1)
        assert transcript is not None and transcript.plain_text == "хочу вернуть заказ"
        assert transcript.turns[0].words[0].word == "хочу"
        dead = await outbox.list_items(conn, "dead", limit=10)
        pending = await outbox.list_items(conn, "pending", limit=10)
        assert [i.id for i in dead] == [2] and [i.id for i in pending] == [1]
    async with engine.begin() as conn:
        user = await authenticate(conn, "anna", PASSWORD)
        assert user is not None and user.role == "manager"
    principal = await TokenVerifier(engine).verify(TOKEN)
    assert principal is not None and principal.role == "crm"
