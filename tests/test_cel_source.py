"""Reading CEL where Asterisk writes it: the traces' real CEL rows in a real `cel` table on
PostgreSQL (cel_pgsql) and on MariaDB (FreePBX's cel_odbc, asteriskcdrdb), read back by the
CelSource and rebuilt: the same record as from AMI. A source that is down or wrong is a state and
one log line, never an exception into the caller's path."""

from __future__ import annotations

import dataclasses
import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from pbx_bridge.calls.rebuild import rebuild_calls
from pbx_bridge.cel.source import CelSource, CelUnavailable
from tests.cel_support import (
    CSV_NAMES,
    csv_mappings,
    load_table,
    table_rows,
    unique_table,
)
from tests.test_cel_rebuild import ami_record, assert_same_call
from tests.tracker_support import EXPECTED, check_record, settings_for

DAY = (datetime(2026, 12, 5, tzinfo=UTC), datetime(2026, 12, 6, tzinfo=UTC))


@pytest.mark.parametrize("name", CSV_NAMES)
async def test_each_trace_read_from_a_real_cel_table(cel_url: str, traces: Path, name: str) -> None:
    table = unique_table()
    await load_table(cel_url, table, table_rows(csv_mappings(name)))
    source = CelSource("pbx", cel_url, table)
    try:
        ended = await source.ended_between(*DAY)
        linkedids = sorted({lid for lid, _ in ended})
        rows = await source.call_rows(linkedids)
        assert source.state == "ok"
    finally:
        await source.close()
    rebuilt = rebuild_calls(rows, settings_for(name))
    assert len(rebuilt.records) == 1
    check_record(rebuilt.records[0], dataclasses.replace(EXPECTED[name], click_to_call_id=None))
    assert_same_call(rebuilt.records[0], ami_record(traces, name))


async def test_a_call_is_read_whole_from_its_linkedid_alone(cel_url: str) -> None:
    """The pickup's phone wrote its first rows under a Linkedid of its own: asking for the
    call's Linkedid brings those too (through the channel, then its Linkedid)."""
    table = unique_table()
    await load_table(cel_url, table, table_rows(csv_mappings("sip_pickup")))
    source = CelSource("pbx", cel_url, table)
    try:
        rows = await source.call_rows(["pbx-1796481308.259"])
    finally:
        await source.close()
    assert len(rows) == len(csv_mappings("sip_pickup"))
    assert {r.linkedid for r in rows} == {"pbx-1796481308.259", "pbx-1796481310.261"}


async def test_rows_in_local_time_with_the_pbx_zone(cel_mysql_url: str, traces: Path) -> None:
    """FreePBX writes local time unless usegmtime: cel_timezone says which zone."""
    table = unique_table()
    await load_table(cel_mysql_url, table, table_rows(csv_mappings("sip_queue_ringall_cel"), "Europe/Moscow"))
    source = CelSource("pbx", cel_mysql_url, table, "Europe/Moscow")
    try:
        # 14:34 UTC = 17:34 in Moscow: a UTC window around the call finds it.
        ended = await source.ended_between(datetime(2026, 12, 5, 14, 30, tzinfo=UTC),
                                           datetime(2026, 12, 5, 14, 40, tzinfo=UTC))
        rows = await source.call_rows([lid for lid, _ in ended])
    finally:
        await source.close()
    assert [lid for lid, _ in ended] == ["pbx-1796481244.231"]
    assert_same_call(rebuild_calls(rows, settings_for("sip_")).records[0],
                     ami_record(traces, "sip_queue_ringall_cel"))


async def test_the_source_never_writes(cel_url: str) -> None:
    table = unique_table()
    await load_table(cel_url, table, table_rows(csv_mappings("sip_internal_call")))
    source = CelSource("pbx", cel_url, table)
    try:
        await source.ended_between(*DAY)
        assert source._engine is not None
        with pytest.raises(sa.exc.DBAPIError):
            async with source._engine.begin() as conn:
                await conn.execute(sa.text(f"DELETE FROM {table}"))
    finally:
        await source.close()


async def test_a_source_that_is_down_is_a_state_and_one_log_line(
        caplog: pytest.LogCaptureFixture) -> None:
    source = CelSource("pbx", "postgresql+asyncpg://postgres@127.0.0.1:1/cel", "cel", query_timeout=3)
    caplog.set_level(logging.ERROR, logger="pbx_bridge.cel")
    try:
        for _ in range(3):
            with pytest.raises(CelUnavailable):
                await source.ended_between(*DAY)
    finally:
        await source.close()
    assert source.state == "down" and source.last_error
    assert len([r for r in caplog.records if "cel.source_down" in r.getMessage()]) == 1


async def test_a_missing_table_or_columns_is_misconfigured(cel_url: str) -> None:
    source = CelSource("pbx", cel_url, "no_such_cel_table")
    try:
        with pytest.raises(CelUnavailable):
            await source.ended_between(*DAY)
        assert source.state == "misconfigured" and "no table" in source.last_error
    finally:
        await source.close()
    table = unique_table()
    engine = sa.ext.asyncio.create_async_engine(cel_url)
    async with engine.begin() as conn:
        await conn.execute(sa.text(f"CREATE TABLE {table} (eventtype varchar(30), eventtime timestamp)"))
    await engine.dispose()
    source = CelSource("pbx", cel_url, table)
    try:
        with pytest.raises(CelUnavailable):
            await source.ended_between(*DAY)
        assert source.state == "misconfigured" and "linkedid" in source.last_error
    finally:
        await source.close()


async def test_describe_says_what_the_table_holds_and_what_is_missing(cel_url: str) -> None:
    table = unique_table()
    rows = table_rows(csv_mappings("sip_queue_ringall_cel")) + table_rows(csv_mappings("sip_pickup"))
    await load_table(cel_url, table, rows)
    source = CelSource("pbx", cel_url, table)
    try:
        info = await source.describe()
    finally:
        await source.close()
    assert {"eventtype", "eventtime", "linkedid", "extra"} <= set(info.columns)
    assert info.newest is not None and info.newest.year == 2026
    assert info.event_types["LINKEDID_END"] == 3 and info.applications == {"Queue": 1, "Dial": 1}
    assert any("no index on linkedid" in w for w in info.warnings)
    assert not any("LINKEDID_END" in w for w in info.warnings)
    # Without LINKEDID_END rows nothing is known to be over: said plainly.
    table = unique_table()
    await load_table(cel_url, table, [r for r in rows if r["eventtype"] != "LINKEDID_END"])
    source = CelSource("pbx", cel_url, table)
    try:
        info = await source.describe()
    finally:
        await source.close()
    assert any("LINKEDID_END" in w for w in info.warnings)
