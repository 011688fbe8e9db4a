"""Call records in the database: written as calls progress (state 'live'), finalized once
(state 'ended'), upserted by (pbx, linkedid) so a replay or a restart never duplicates a call.

SQLAlchemy Core on an AsyncConnection the caller opens (one transaction per drained batch).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from pbx_bridge.ami.events import AmiEvent
from pbx_bridge.calls.changes import CallChange
from pbx_bridge.calls.record import SOURCES, CallRecord, Leg, Transfer, combine, to_datetime
from pbx_bridge.db.schema import call_legs, calls, cel_backfill, journal_checkpoints, raw_events

# Columns another feature owns (CRM match, tags, legal hold): the pipeline never overwrites them.
_OWNED_ELSEWHERE = {"id", "client_id", "client_ambiguous", "tags", "legal_hold", "crm_done_at"}


def _cut(value: str | None, length: int) -> str | None:
    return None if value is None else value[:length]


def _call_values(rec: CallRecord, now: datetime) -> dict[str, Any]:
    return {
        "pbx": rec.pbx[:64],
        "linkedid": rec.linkedid[:128],
        "state": "live" if rec.ended_at is None else "ended",
        "direction": rec.direction,
        "status": rec.status,
        "missed": rec.missed,
        "customer_number": _cut(rec.customer_number, 32),
        "customer_name": _cut(rec.customer_name, 255),
        "did": _cut(rec.did, 32),
        "dialled": _cut(rec.dialled, 64),
        "operator": _cut(rec.operator, 16),
        "operators_rung": [op[:16] for op in rec.operators_rung],
        "queue": _cut(rec.queue, 64),
        "transfers": [t.to_dict() for t in rec.transfers],
        "started_at": to_datetime(rec.started_at),
        "answered_at": to_datetime(rec.answered_at),
        "ended_at": to_datetime(rec.ended_at),
        "wait_seconds": rec.wait_seconds,
        "talk_seconds": rec.talk_seconds,
        "click_to_call_id": _cut(rec.click_to_call_id, 64),
        "ended_during_outage": rec.ended_during_outage,
        "updated_at": now,
        "tags": [],
        "source": rec.source,
    }


def _leg_values(call_id: int, leg: Leg) -> dict[str, Any]:
    return {
        "call_id": call_id,
        "uniqueid": leg.uniqueid[:128],
        "channel": leg.channel[:255],
        "role": leg.role,
        "extension": _cut(leg.extension, 16),
        "created_at": to_datetime(leg.created_at),
        "answered_at": to_datetime(leg.answered_at),
        "hungup_at": to_datetime(leg.hungup_at),
        "hangup_cause": _cut(leg.hangup_cause, 64),
    }


def _insert(conn: AsyncConnection, table: sa.Table) -> Any:
    return _insert_for(conn.dialect.name, table)


def _insert_for(dialect: str, table: sa.Table) -> Any:
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise RuntimeError(f"unsupported database {dialect}")  # pragma: no cover


async def save_changes(conn: AsyncConnection, changes: Sequence[CallChange],
                       now: datetime | None = None) -> set[int]:
    """Write the latest state of every call in the batch; sets `record.id` on each change.
    Returns the ids (`id(change)`) of backfilled changes that were not written, which the
    pipeline then does not hand to the hooks.

    An ended row is final: later writes of the same call (a replay, a late duplicate) leave it
    as it is; only a call rebuilt from CEL may complete one that ended during an outage. A
    record merged into another call (attended transfer, pickup) is deleted."""
    if not changes:
        return set()
    now = now or datetime.now(UTC)
    live = [c for c in changes if not c.backfilled]
    backfilled = [c for c in changes if c.backfilled]
    latest: dict[tuple[str, str], CallRecord] = {}
    for change in live:
        rec = change.record
        latest[(rec.pbx[:64], rec.linkedid[:128])] = rec
    merged = [key for key, rec in latest.items() if rec.merged_into]
    for key in merged:
        del latest[key]
    for where in _keys_where(merged):
        gone = sa.select(calls.c.id).where(where)
        await conn.execute(sa.delete(call_legs).where(call_legs.c.call_id.in_(gone)))
        await conn.execute(sa.delete(calls).where(where))
    ids = (await _write(conn, latest, now, LIVE_ONLY))[0] if latest else {}
    skipped: set[int] = set()
    if backfilled:
        done = await _save_backfilled(conn, backfilled, now)
        ids.update(done)
        skipped = {id(c) for c in backfilled
                   if (c.record.pbx[:64], c.record.linkedid[:128]) not in done}
    for change in live:
        found = ids.get((change.record.pbx[:64], change.record.linkedid[:128]))
        if found is not None:
            change.record.id = found[0]
    return skipped


Key = tuple[str, str]


def _keys_where(keys: Sequence[Key], size: int = 500) -> list[Any]:
    """Conditions selecting these (pbx, linkedid) rows, a chunk each: `pbx = ? AND linkedid IN
    (...)`, which the unique index serves (a row-value IN list is scanned on PostgreSQL)."""
    by_pbx: dict[str, list[str]] = {}
    for pbx, linkedid in keys:
        by_pbx.setdefault(pbx, []).append(linkedid)
    return [sa.and_(calls.c.pbx == pbx, calls.c.linkedid.in_(linkedids[i:i + size]))
            for pbx, linkedids in by_pbx.items() for i in range(0, len(linkedids), size)]


# Which existing call rows a write may change: live ones (the AMI pipeline), and also those
# that ended during an outage (a call rebuilt from CEL completes them).
LIVE_ONLY = "live"
LIVE_OR_OUTAGE = "live_or_outage"
_GUARDS = {
    LIVE_ONLY: lambda: calls.c.state != "ended",
    LIVE_OR_OUTAGE: lambda: sa.or_(calls.c.state != "ended", calls.c.ended_during_outage.is_(True)),
}


@functools.cache
def _calls_upsert(dialect: str, guard: str) -> Any:
    """The calls upsert, built once per dialect and guard: building it (the `excluded` alias
    of every column) and its cache key cost more CPU than the rest of a small save, and the
    save is on every screen pop's path (bench_ui pop)."""
    stmt = _insert_for(dialect, calls)
    update = {c.name: stmt.excluded[c.name] for c in calls.columns
              if c.name not in _OWNED_ELSEWHERE and c.name not in ("pbx", "linkedid")}
    stmt = stmt.on_conflict_do_update(
        index_elements=[calls.c.pbx, calls.c.linkedid], set_=update, where=_GUARDS[guard]())
    return stmt.returning(calls.c.pbx, calls.c.linkedid, calls.c.id, calls.c.state)


@functools.cache
def _legs_upsert(dialect: str) -> Any:
    legs_stmt = _insert_for(dialect, call_legs)
    return legs_stmt.on_conflict_do_update(
        index_elements=[call_legs.c.call_id, call_legs.c.uniqueid],
        set_={name: legs_stmt.excluded[name] for name in
              ("channel", "role", "extension", "created_at", "answered_at", "hungup_at",
               "hangup_cause")},
    )


async def _write(conn: AsyncConnection, latest: dict[Key, CallRecord], now: datetime,
                 guard: str) -> tuple[dict[Key, tuple[int, str]], set[Key]]:
    """Upsert the records (an existing row only where `guard` holds) and their legs; returns
    (pbx, linkedid) -> (id, state) for every record, and the keys written."""
    rows = [_call_values(rec, now) for rec in latest.values()]
    result = await conn.execute(_calls_upsert(conn.dialect.name, guard), rows)
    ids: dict[tuple[str, str], tuple[int, str]] = {
        (pbx, linkedid): (call_id, state) for pbx, linkedid, call_id, state in result}
    written = set(ids)
    # Rows left alone (already ended) return nothing: look their ids up.
    for where in _keys_where([key for key in latest if key not in ids]):
        result = await conn.execute(
            sa.select(calls.c.pbx, calls.c.linkedid, calls.c.id, calls.c.state).where(where))
        for pbx, linkedid, call_id, state in result:
            ids[(pbx, linkedid)] = (call_id, state)
    await _write_legs(conn, {key: (ids[key][0], latest[key]) for key in written}, tidy=True)
    return ids, written


async def _write_legs(conn: AsyncConnection, written: dict[Key, tuple[int, CallRecord]], *,
                      tidy: bool) -> None:
    """The legs of calls just written; `tidy`: drop rows of legs an earlier write made that
    the record no longer has (not needed for a call just inserted)."""
    leg_rows = [_leg_values(call_id, leg) for call_id, rec in written.values() for leg in rec.legs]
    if not leg_rows:
        return
    await conn.execute(_legs_upsert(conn.dialect.name), leg_rows)
    if tidy:
        # A Local channel's leg is named after its ;1 half once that is seen: drop the row the
        # ;2 half made before.
        written_ids = [call_id for call_id, _rec in written.values()]
        keep = [(row["call_id"], row["uniqueid"]) for row in leg_rows]
        await conn.execute(sa.delete(call_legs).where(
            call_legs.c.call_id.in_(written_ids),
            sa.not_(sa.tuple_(call_legs.c.call_id, call_legs.c.uniqueid).in_(keep))))


async def _save_backfilled(conn: AsyncConnection, changes: Sequence[CallChange], now: datetime,
                           ) -> dict[tuple[str, str], tuple[int, str]]:
    """Calls rebuilt from CEL: inserted when the log lacks them, completed (`ami+cel`, keeping
    what AMI knew) when their row is live or ended during an outage, never written over a
    record the AMI events completed. Returns the keys written."""
    by_key = {(c.record.pbx[:64], c.record.linkedid[:128]): c for c in changes}
    # Most are new to the log: one INSERT that leaves existing rows alone.
    insert = _insert(conn, calls).on_conflict_do_nothing(index_elements=[calls.c.pbx, calls.c.linkedid])
    result = await conn.execute(
        insert.returning(calls.c.pbx, calls.c.linkedid, calls.c.id),
        [_call_values(c.record, now) for c in by_key.values()])
    done: dict[Key, tuple[int, str]] = {}
    for pbx, linkedid, call_id in result:
        done[(pbx, linkedid)] = (call_id, "ended")
        by_key[(pbx, linkedid)].record.id = call_id
    await _write_legs(conn, {key: (ids[0], by_key[key].record) for key, ids in done.items()},
                      tidy=False)
    # The few the log had: read (and locked), completed with what AMI knew, written over
    # unless the AMI events completed them.
    existing: dict[Key, Any] = {}
    for where in _keys_where([key for key in by_key if key not in done]):
        query = sa.select(calls).where(where)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()  # a concurrent writer of the same call waits
        for found in (await conn.execute(query)).all():
            existing[(found.pbx, found.linkedid)] = found
    latest: dict[Key, CallRecord] = {}
    for key, row in existing.items():
        if row.state == "ended" and not row.ended_during_outage:
            continue
        change = by_key[key]
        change.record = combine(change.record, calls_from_rows([row])[0])
        latest[key] = change.record
    if latest:
        ids, written = await _write(conn, latest, now, LIVE_OR_OUTAGE)
        for key in written:
            latest[key].id = ids[key][0]
            done[key] = ids[key]
    return done


# --- reading ---------------------------------------------------------------------------------


def _ts(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _transfer(data: Any) -> Transfer | None:
    if not isinstance(data, dict):
        return None
    at = data.get("at")
    try:
        when = datetime.fromisoformat(str(at).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
    kind = data.get("kind")
    if kind not in ("blind", "attended", "pickup"):
        return None
    return Transfer(kind=kind, at=when, from_operator=data.get("from_operator"),
                    to_operator=data.get("to_operator"))


def calls_from_rows(call_rows: Iterable[Any], leg_rows: Iterable[Any] = ()) -> list[CallRecord]:
    """Database rows (calls, and call_legs of those calls) as CallRecords."""
    legs: dict[int, list[Leg]] = {}
    for row in leg_rows:
        legs.setdefault(row.call_id, []).append(Leg(
            uniqueid=row.uniqueid, channel=row.channel, role=row.role, extension=row.extension,
            created_at=row.created_at.timestamp(), answered_at=_ts(row.answered_at),
            hungup_at=_ts(row.hungup_at), hangup_cause=row.hangup_cause))
    records = []
    for row in call_rows:
        transfers = [t for t in (_transfer(d) for d in (row.transfers or [])) if t is not None]
        rec = CallRecord(
            pbx=row.pbx, linkedid=row.linkedid, started_at=row.started_at.timestamp(),
            direction=row.direction, status=row.status, customer_number=row.customer_number,
            customer_name=row.customer_name, did=row.did, dialled=row.dialled,
            operator=row.operator, operators_rung=list(row.operators_rung or []),
            queue=row.queue, transfers=transfers, answered_at=_ts(row.answered_at),
            ended_at=_ts(row.ended_at), click_to_call_id=row.click_to_call_id,
            legs=sorted(legs.get(row.id, []), key=lambda leg: leg.created_at),
            ended_during_outage=bool(row.ended_during_outage), id=row.id,
            client_id=row.client_id,
            source=row.source if row.source in SOURCES else "ami",
        )
        records.append(rec)
    return records


async def _with_legs(conn: AsyncConnection, query: sa.Select[Any]) -> list[CallRecord]:
    call_rows = (await conn.execute(query)).all()
    if not call_rows:
        return []
    ids = [row.id for row in call_rows]
    leg_rows: list[Any] = []
    for start in range(0, len(ids), 500):
        leg_rows += (await conn.execute(
            sa.select(call_legs).where(call_legs.c.call_id.in_(ids[start:start + 500]))
            .order_by(call_legs.c.id))).all()
    return calls_from_rows(call_rows, leg_rows)


async def get_call(conn: AsyncConnection, call_id: int) -> CallRecord | None:
    found = await _with_legs(conn, sa.select(calls).where(calls.c.id == call_id))
    return found[0] if found else None


async def list_calls(conn: AsyncConnection, *, limit: int | None = 50, live: bool | None = None,
                     pbx: str | None = None, before_id: int | None = None) -> list[CallRecord]:
    """Newest first. `live`: only live (True) or only ended (False) calls."""
    query = sa.select(calls).order_by(calls.c.started_at.desc(), calls.c.id.desc())
    if live is not None:
        query = query.where(calls.c.state == ("live" if live else "ended"))
    if pbx is not None:
        query = query.where(calls.c.pbx == pbx)
    if before_id is not None:
        query = query.where(calls.c.id < before_id)
    if limit is not None:
        query = query.limit(limit)
    return await _with_legs(conn, query)


async def ended_without_crm(conn: AsyncConnection, before: datetime,
                            limit: int = 200) -> list[CallRecord]:
    """Ended calls, last saved before `before`, whose CRM work was never done, oldest first."""
    return await _with_legs(conn, sa.select(calls).where(
        calls.c.crm_done_at.is_(None), calls.c.state == "ended", calls.c.updated_at < before,
    ).order_by(calls.c.id).limit(limit))


async def load_live(conn: AsyncConnection, pbx: str | None = None) -> list[CallRecord]:
    """Calls still live in the database (for restart reconciliation), of one PBX or all."""
    return await list_calls(conn, limit=None, live=True, pbx=pbx)


# --- raw events ------------------------------------------------------------------------------


def _event_linkedid(ev: AmiEvent) -> str | None:
    h = ev.headers
    value = h.get("Linkedid") or h.get("LinkedID") or h.get("DestLinkedid")
    return value[:128] if value else None


async def save_raw_events(conn: AsyncConnection, events: Sequence[AmiEvent]) -> None:
    if not events:
        return
    rows = []
    for ev in events:
        headers: dict[str, Any] = dict(ev.headers)
        if ev.variables:
            headers["ChanVariable"] = dict(ev.variables)
        when = ev.received_at or ev.timestamp
        rows.append({
            "pbx": ev.pbx[:64], "name": ev.name[:64], "linkedid": _event_linkedid(ev),
            "received_at": datetime.fromtimestamp(when, UTC) if when > 0 else datetime.now(UTC),
            "headers": headers,
        })
    await conn.execute(sa.insert(raw_events), rows)


async def load_journal_checkpoints(conn: AsyncConnection) -> dict[str, int]:
    """PBX -> the last journaled event whose changes are saved."""
    rows = await conn.execute(sa.select(journal_checkpoints.c.pbx, journal_checkpoints.c.seq))
    return {pbx: int(seq) for pbx, seq in rows}


async def save_journal_checkpoints(conn: AsyncConnection, seqs: dict[str, int],
                                   now: datetime | None = None) -> None:
    if not seqs:
        return
    now = now or datetime.now(UTC)
    stmt = _insert(conn, journal_checkpoints)
    stmt = stmt.on_conflict_do_update(
        index_elements=[journal_checkpoints.c.pbx],
        set_={"seq": stmt.excluded.seq, "updated_at": stmt.excluded.updated_at})
    await conn.execute(stmt, [{"pbx": pbx[:64], "seq": seq, "updated_at": now}
                              for pbx, seq in seqs.items()])


async def purge_raw_events(conn: AsyncConnection, keep_days: int,
                           now: datetime | None = None) -> int:
    """Delete raw events older than keep_days; returns how many went."""
    now = now or datetime.now(UTC)
    result = await conn.execute(
        sa.delete(raw_events).where(raw_events.c.received_at < now - timedelta(days=keep_days)))
    return int(result.rowcount or 0)


# --- CEL backfill --------------------------------------------------------------------------------


async def needing_backfill(conn: AsyncConnection, pbx: str, linkedids: Sequence[str]) -> list[str]:
    """Of these calls (over, says CEL), those the log lacks, has only live, or has ended during
    an outage; in the order given."""
    final: set[str] = set()
    for start in range(0, len(linkedids), 500):
        chunk = list(linkedids[start:start + 500])
        rows = await conn.execute(sa.select(calls.c.linkedid).where(
            calls.c.pbx == pbx, calls.c.linkedid.in_(chunk), calls.c.state == "ended",
            calls.c.ended_during_outage.is_(False)))
        final.update(r.linkedid for r in rows)
    return [lid for lid in linkedids if lid not in final]


async def load_cel_marks(conn: AsyncConnection) -> dict[str, float]:
    """PBX -> the time (epoch) up to which its CEL is known to have been swept."""
    rows = await conn.execute(sa.select(cel_backfill.c.pbx, cel_backfill.c.swept_until))
    return {pbx: when.timestamp() for pbx, when in rows}


async def save_cel_marks(conn: AsyncConnection, marks: dict[str, float],
                         now: datetime | None = None) -> None:
    if not marks:
        return
    now = now or datetime.now(UTC)
    stmt = _insert(conn, cel_backfill)
    stmt = stmt.on_conflict_do_update(
        index_elements=[cel_backfill.c.pbx],
        set_={"swept_until": stmt.excluded.swept_until, "updated_at": stmt.excluded.updated_at},
        # Never backwards (a manual backfill of an old day must not move it).
        where=cel_backfill.c.swept_until < stmt.excluded.swept_until)
    await conn.execute(stmt, [{"pbx": pbx[:64], "swept_until": datetime.fromtimestamp(when, UTC),
                               "updated_at": now} for pbx, when in marks.items()])
