"""`pbx-bridge cel check` and `pbx-bridge calls backfill` as a user runs them (subprocesses),
against real CEL tables on PostgreSQL and MariaDB."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_sync.schema import client_phones, tasks
from tests.cel_support import CSV_NAMES, csv_mappings, load_table, table_rows, unique_table
from tests.e2e_support import all_calls, cli_env, run_cli, toml_str
from tests.test_cel_rebuild import ami_record, assert_same_call
from tests.tracker_support import SIP_OPERATORS


def _config(tmp: Path, db_url: str, cel_url: str, table: str) -> Path:
    path = tmp / "bridge.toml"
    path.write_text(f"""
[server]
data_dir = {toml_str(tmp / "var")}

[database]
url = {toml_str(db_url)}

[[pbx]]
name = "pbx"
secret = "x"
operator_channel = {toml_str(SIP_OPERATORS)}
inbound_contexts = ["from-trunk"]
cel_url = {toml_str(cel_url)}
cel_table = {toml_str(table)}
""")
    return path


async def test_cel_check_says_what_the_table_holds(cel_url: str, tmp_path: Path) -> None:
    table = unique_table()
    await load_table(cel_url, table, table_rows(csv_mappings("sip_queue_ringall_cel")))
    env = cli_env(_config(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite3'}", cel_url, table))
    code, out, err = await run_cli("cel", "check", env=env)
    assert code == 0, err
    assert "newest row: 2026-12-05T14:34:12" in out
    assert "LINKEDID_END 1" in out and "APP_START of: Queue 1" in out
    assert "no APP_START of Dial" in out and "no index on linkedid" in out


async def test_cel_check_of_a_source_that_is_down_is_one_line_and_exit_1(tmp_path: Path) -> None:
    env = cli_env(_config(tmp_path, f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite3'}",
                          "postgresql+asyncpg://postgres@127.0.0.1:1/cel", "cel"))
    code, out, err = await run_cli("cel", "check", env=env)
    assert code == 1 and "down:" in out and "Traceback" not in err


async def test_cel_check_without_a_cel_source_says_so(tmp_path: Path) -> None:
    env = cli_env(PBX_BRIDGE_SERVER__DATA_DIR=str(tmp_path))
    code, _out, err = await run_cli("cel", "check", env=env)
    assert code == 1 and "no [[pbx]] has a cel_url" in err


async def test_calls_backfill_adds_the_calls_of_a_day(engine: AsyncEngine, db_url: str, cel_pg_url: str,
                                                      traces: Path, tmp_path: Path) -> None:
    table = unique_table()
    rows = []
    for name in CSV_NAMES:
        rows += table_rows(csv_mappings(name))
    await load_table(cel_pg_url, table, rows)
    env = cli_env(_config(tmp_path, db_url, cel_pg_url, table))
    code, out, err = await run_cli("calls", "backfill", "--since", "2026-12-05", "--until",
                                   "2026-12-06", env=env)
    assert code == 0, err
    assert "pbx: 7 calls ended in CEL, 7 backfilled" in out  # the pickup's phone ended its own first
    records = {r.linkedid: r for r in await all_calls(engine)}
    assert len(records) == len(CSV_NAMES)
    for name in CSV_NAMES:
        assert_same_call(records[ami_record(traces, name).linkedid], ami_record(traces, name))
    async with engine.connect() as conn:
        cards = (await conn.execute(sa.select(sa.func.count()).select_from(client_phones))).scalar()
        open_tasks = (await conn.execute(sa.select(sa.func.count()).select_from(tasks))).scalar()
    assert cards == 4  # the four customers (inbound: every caller; outbound busy: no card)
    assert open_tasks == 0  # every inbound call was answered
    # Again: nothing new.
    code, out, err = await run_cli("calls", "backfill", "--since", "2026-12-05", "--until",
                                   "2026-12-06", env=env)
    assert code == 0, err
    assert len(await all_calls(engine)) == len(CSV_NAMES)
    code, out, _err = await run_cli("calls", "list", env=env)
    assert "cel" in out and "heard of only from Asterisk's CEL" in out


async def test_calls_backfill_refuses_a_bad_time(tmp_path: Path) -> None:
    env = cli_env(PBX_BRIDGE_SERVER__DATA_DIR=str(tmp_path))
    code, _out, err = await run_cli("calls", "backfill", "--since", "last tuesday", env=env)
    assert code == 2 and "is not a date" in err
