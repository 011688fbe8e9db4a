"""The call records the shared AMI traces must produce (their README's table), built by hand so
the CRM stage can be tested while the tracker is written in parallel; and a tiny pipeline that
saves a record to `calls` and runs a hook through its changes, as the real pipeline does."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from pbx_bridge.calls.changes import CallChange, CallHook
from pbx_bridge.calls.record import CallRecord, to_datetime
from pbx_bridge.db.schema import calls

BASE = datetime(2026, 11, 2, 9, 0, tzinfo=UTC).timestamp()


def _rec(
    name: str,
    offset: float,
    *,
    direction: str,
    number: str | None,
    cname: str | None = None,
    did: str | None = None,
    dialled: str | None = None,
    rung: list[str],
    operator: str | None,
    status: str,
    wait: float,
    talk: float,
    queue: str | None = None,
    c2c: str | None = None,
) -> CallRecord:
    start = BASE + offset
    answered = start + wait if status == "answered" else None
    ended = (answered + talk) if answered is not None else start + wait
    return CallRecord(
        pbx="main",
        linkedid=f"{name}-linkedid",
        started_at=start,
        direction=direction,  # type: ignore[arg-type]
        status=status,  # type: ignore[arg-type]
        customer_number=number,
        customer_name=cname,
        did=did,
        dialled=dialled,
        operator=operator,
        operators_rung=rung,
        queue=queue,
        answered_at=answered,
        ended_at=ended,
        click_to_call_id=c2c,
    )


def trace_records() -> dict[str, CallRecord]:
    """README table of /work/shared/ami-traces, in order, one minute apart."""
    return {
        "inbound_answered": _rec(
            "inbound_answered",
            0,
            direction="inbound",
            number="+74951234567",
            cname="Ivan Petrov",
            did="+74951110000",
            rung=["101"],
            operator="101",
            status="answered",
            wait=2.0,
            talk=4.9,
        ),
        "inbound_answered_recorded": _rec(
            "inbound_answered_recorded",
            60,
            direction="inbound",
            number="+74951234567",
            cname="Ivan Petrov",
            did="+74951110000",
            rung=["101"],
            operator="101",
            status="answered",
            wait=2.0,
            talk=3.9,
        ),
        "inbound_noanswer": _rec(
            "inbound_noanswer",
            120,
            direction="inbound",
            number="+79161234567",
            did="+74951112222",
            rung=["102"],
            operator=None,
            status="no_answer",
            wait=4.0,
            talk=0,
        ),
        "inbound_busy": _rec(
            "inbound_busy",
            180,
            direction="inbound",
            number="+79161112233",
            did="+74951110000",
            rung=["101"],
            operator=None,
            status="busy",
            wait=0.0,
            talk=0,
        ),
        "queue_ringall_answered": _rec(
            "queue_ringall_answered",
            240,
            direction="inbound",
            number="+74957654321",
            cname="Olga",
            did="+74951113333",
            rung=["101", "102"],
            operator="102",
            status="answered",
            wait=3.0,
            talk=4.9,
            queue="sales",
        ),
        "outbound_answered": _rec(
            "outbound_answered",
            300,
            direction="outbound",
            number="+74959876543",
            dialled="84959876543",
            rung=[],
            operator="101",
            status="answered",
            wait=2.0,
            talk=6.0,
        ),
        "click_to_call": _rec(
            "click_to_call",
            360,
            direction="outbound",
            number="+79035550199",
            dialled="89035550199",
            rung=["101"],
            operator="101",
            status="answered",
            wait=2.0,
            talk=6.0,
            c2c="c2c-demo-1",
        ),
        "internal_call": _rec(
            "internal_call",
            420,
            direction="internal",
            number=None,
            dialled="102",
            rung=["102"],
            operator="102",
            status="answered",
            wait=2.0,
            talk=4.0,
        ),
        # The README gives no times for it (the client joined mid-call): these are ours.
        "resync_mid_call": _rec(
            "resync_mid_call",
            480,
            direction="inbound",
            number="+74991234567",
            cname="Anna Sidorova",
            did="+74951110000",
            rung=["101"],
            operator="101",
            status="answered",
            wait=5.0,
            talk=10.0,
        ),
        "sip_inbound_answered_recorded": _rec(
            "sip_inbound_answered_recorded",
            540,
            direction="inbound",
            number="+74951234567",
            cname="Ivan Petrov",
            did="+74951110000",
            rung=["101"],
            operator="101",
            status="answered",
            wait=2.0,
            talk=4.9,
        ),
    }


async def save_call(engine: AsyncEngine, record: CallRecord) -> int:
    """What the pipeline does before the hooks run: the record in `calls` (id set on the record)."""
    started = to_datetime(record.started_at)
    async with engine.begin() as conn:
        result = await conn.execute(
            sa.insert(calls)
            .values(
                pbx=record.pbx,
                linkedid=record.linkedid,
                state="ended" if record.ended_at else "live",
                direction=record.direction,
                status=record.status,
                missed=record.missed,
                customer_number=record.customer_number,
                customer_name=record.customer_name,
                did=record.did,
                dialled=record.dialled,
                operator=record.operator,
                operators_rung=record.operators_rung,
                queue=record.queue,
                transfers=[],
                started_at=started,
                answered_at=to_datetime(record.answered_at),
                ended_at=to_datetime(record.ended_at),
                wait_seconds=record.wait_seconds,
                talk_seconds=record.talk_seconds,
                click_to_call_id=record.click_to_call_id,
                tags=[],
                updated_at=datetime.now(UTC),  # as the store does: when it was saved
            )
            .returning(calls.c.id)
        )
        record.id = int(result.scalar_one())
    return record.id


async def replay(engine: AsyncEngine, hook: CallHook, record: CallRecord) -> list[CallChange]:
    """started -> ringing (each operator) -> answered -> ended, as the tracker reports them."""
    await save_call(engine, record)
    live = replace(record, status=None, answered_at=None, ended_at=None, operator=None)
    changes = [CallChange("started", live)]
    changes += [CallChange("ringing", live, extension=ext) for ext in record.operators_rung]
    if record.answered_at is not None:
        changes.append(
            CallChange(
                "answered",
                replace(live, answered_at=record.answered_at, operator=record.operator),
                extension=record.operator,
            )
        )
    changes.append(CallChange("ended", record))
    for change in changes:
        await hook.on_change(change)
    return changes
