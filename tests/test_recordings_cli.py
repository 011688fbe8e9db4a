"""`pbx-bridge recordings list|retry|retention` as a user runs them, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from pbx_bridge.db.engine import make_engine
from pbx_bridge.db.schema import calls
from recordings.schema import recordings

ROOT = Path(__file__).resolve().parent.parent


def cli(db_url: str, data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PBX_BRIDGE_")}
    env.update(PBX_BRIDGE_DATABASE__URL=db_url, PBX_BRIDGE_SERVER__DATA_DIR=str(data_dir),
               PBX_BRIDGE_RECORDINGS__LOCAL_SPOOL_DIR=str(data_dir / "spool"))
    return subprocess.run([sys.executable, "-m", "pbx_bridge", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=60)


async def seed(db_url: str) -> dict[str, int]:
    engine = make_engine(db_url)
    now = datetime.now(UTC)
    ids = {}
    try:
        async with engine.begin() as conn:
            for name, state, age in [("lost", "missing", 1), ("old", "ready", 400), ("held", "ready", 400)]:
                call_id = int((await conn.execute(calls.insert().values(
                    pbx="main", linkedid=name, state="ended", direction="inbound", operators_rung=[],
                    transfers=[], tags=[], started_at=now, updated_at=now, legal_hold=name == "held",
                ).returning(calls.c.id))).scalar_one())
                await conn.execute(recordings.insert().values(
                    call_id=call_id, pbx="main", linkedid=name, state=state, segments=[],
                    last_error="missing: x.raw: no such file" if state == "missing" else None,
                    created_at=now - timedelta(days=age), updated_at=now))
                ids[name] = call_id
    finally:
        await engine.dispose()
    return ids


async def states(db_url: str) -> dict[int, str]:
    engine = make_engine(db_url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(sa.select(recordings.c.call_id, recordings.c.state))).all()
    finally:
        await engine.dispose()
    return {r.call_id: r.state for r in rows}


def test_recordings_commands(db_url: str, tmp_path: Path) -> None:
    ids = asyncio.run(seed(db_url))
    listed = cli(db_url, tmp_path, "recordings", "list")
    assert listed.returncode == 0, listed.stderr
    assert "missing: x.raw: no such file" in listed.stdout and len(listed.stdout.splitlines()) == 3
    as_json = cli(db_url, tmp_path, "recordings", "list", "--json", "--state", "missing")
    assert [json.loads(line)["call_id"] for line in as_json.stdout.splitlines()] == [ids["lost"]]

    retry = cli(db_url, tmp_path, "recordings", "retry", str(ids["lost"]))
    assert retry.returncode == 0, retry.stderr
    assert "queued" in retry.stdout
    assert asyncio.run(states(db_url))[ids["lost"]] == "processing"
    again = cli(db_url, tmp_path, "recordings", "retry", str(ids["lost"]))
    assert again.returncode == 1 and "is processing: nothing to retry" in again.stderr
    unknown = cli(db_url, tmp_path, "recordings", "retry", "424242")
    assert unknown.returncode == 1 and "has no recording" in unknown.stderr
    bad = cli(db_url, tmp_path, "recordings", "list", "--limit", "0")
    assert bad.returncode == 1 and "--limit" in bad.stderr

    retention = cli(db_url, tmp_path, "recordings", "retention")
    assert retention.returncode == 0, retention.stderr
    assert "deleted 1, kept under legal hold 1" in retention.stdout
    after = asyncio.run(states(db_url))
    assert (after[ids["old"]], after[ids["held"]]) == ("deleted", "ready")
