"""`pbx-bridge backup` while `serve` runs under load (the simulated PBX generating calls, the
bridge recording them), then `pbx-bridge restore` into an empty data directory: every call,
client card, recording and transcript that existed when the backup began is found again, each
recording's SHA-256 recomputed here. Damaged backups and occupied targets restore nothing."""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_sync.schema import clients
from pbx_bridge.db.engine import make_engine
from pbx_bridge.db.schema import calls
from pbx_bridge.simulator.server import AmiSimulator, SimulatorSettings
from recordings.schema import recordings
from recordings.transcription.schema import transcripts
from tests.e2e_support import cli_env, free_port, run_cli, start_serve, toml_str, wait_until
from tests.tracker_support import LAB_OPERATORS

pytestmark = pytest.mark.timeout(300)


def bridge_config(path: Path, data_dir: Path, http_port: int, sim: AmiSimulator, spool: Path) -> Path:
    path.write_text(f"""
[server]
port = {http_port}
data_dir = {toml_str(data_dir)}

[transcription]
in_process = false

[recordings]
spool_dir = {toml_str(spool / "monitor")}
first_attempt_delay_seconds = 0.2
retry_delay_seconds = 0.5

[[pbx]]
name = "lab"
port = {sim.port}
secret = "simulator"
operator_channel = '{LAB_OPERATORS}'
inbound_contexts = ["from-trunk"]
asterisk_version = "22.10.1"
""")
    return path


@dataclass
class Loaded:
    sim: AmiSimulator
    config: Path
    data: Path
    engine: AsyncEngine
    log: Path


@pytest.fixture
async def loaded(tmp_path: Path) -> AsyncIterator[Loaded]:
    spool = tmp_path / "spool"
    sim = AmiSimulator(SimulatorSettings(seed=11, spool_dir=spool, speed=10))
    await sim.start()
    data = tmp_path / "src"
    config = bridge_config(tmp_path / "bridge.toml", data, free_port(), sim, spool)
    env = cli_env(config)
    code, _out, err = await run_cli("db", "upgrade", env=env)
    assert code == 0, err
    sim.start_generator(6.0)
    log = tmp_path / "serve.log"
    proc = await start_serve(env, log)
    engine = make_engine(f"sqlite+aiosqlite:///{data / 'pbx-bridge.sqlite3'}")
    try:
        yield Loaded(sim, config, data, engine, log)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 30) == 0, log.read_text()[-3000:]
        await engine.dispose()
        await sim.stop()
    text = log.read_text()
    assert "Traceback" not in text and "database is locked" not in text, text[-3000:]


async def count(engine: AsyncEngine, query: Any) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(query)).scalar_one())


async def add_transcripts(engine: AsyncEngine, how_many: int) -> None:
    """What a `pbx-bridge worker` writes, for calls whose recording is ready."""
    async with engine.begin() as conn:
        ready = (await conn.execute(
            sa.select(recordings.c.call_id).where(recordings.c.state == "ready")
            .where(recordings.c.call_id.not_in(sa.select(transcripts.c.call_id)))
            .limit(how_many))).scalars().all()
        for call_id in ready:
            turns = [{"speaker": "operator", "start": 0.5, "end": 2.0, "text": f"добрый день {call_id}",
                      "words": [{"word": "добрый", "start": 0.5, "end": 1.0, "conf": 0.9}]}]
            await conn.execute(sa.insert(transcripts).values(
                call_id=call_id, job_id=None, turns=turns, plain_text=f"добрый день {call_id}",
                analytics={"talk": {"operator": 1.5}}, language="ru", model="test-model",
                duration_seconds=12.25, created_at=datetime.now(UTC)))


async def state_of(engine: AsyncEngine) -> dict[str, dict[Any, Any]]:
    """What must survive: ended calls, cards, playable recordings, transcripts."""
    async with engine.connect() as conn:
        ended = (await conn.execute(
            sa.select(calls.c.id, calls.c.pbx, calls.c.linkedid, calls.c.direction, calls.c.status,
                      calls.c.customer_number, calls.c.operator, calls.c.started_at, calls.c.ended_at,
                      calls.c.talk_seconds).where(calls.c.state == "ended"))).all()
        cards = (await conn.execute(sa.select(clients.c.id, clients.c.name))).all()
        recs = (await conn.execute(
            sa.select(recordings.c.call_id, recordings.c.stored_path, recordings.c.sha256)
            .where(recordings.c.state == "ready"))).all()
        texts = (await conn.execute(sa.select(transcripts.c.call_id, transcripts.c.plain_text,
                                              transcripts.c.turns))).all()
    return {"calls": {r.id: tuple(r) for r in ended}, "clients": {r.id: tuple(r) for r in cards},
            "recordings": {r.call_id: tuple(r) for r in recs},
            "transcripts": {r.call_id: (r.plain_text, json.dumps(r.turns, sort_keys=True)) for r in texts}}


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def test_backup_under_load_restores_everything_into_an_empty_data_dir(
        loaded: Loaded, tmp_path: Path) -> None:
    engine = loaded.engine
    ready = sa.select(sa.func.count()).select_from(recordings).where(recordings.c.state == "ready")
    await wait_until(lambda: _at_least(engine, ready, 8), 90, "8 recordings ready")
    await add_transcripts(engine, 5)
    before = await state_of(engine)
    assert len(before["transcripts"]) == 5 and before["clients"] and len(before["recordings"]) >= 8
    calls_before = await count(engine, sa.select(sa.func.count()).select_from(calls))

    backup_dir = tmp_path / "backup"
    code, out, err = await run_cli("backup", str(backup_dir), env=cli_env(loaded.config), timeout=120)
    assert code == 0, err + out
    assert "calls" in out and "transcripts" in out
    # The load went on meanwhile: the bridge kept saving calls while the backup ran.
    await wait_until(lambda: _at_least(engine, sa.select(sa.func.count()).select_from(calls),
                                       calls_before + 5), 30, "calls saved during and after the backup")
    manifest = json.loads((backup_dir / "manifest.json").read_text())
    assert manifest["database"] == "sqlite" and manifest["schema"]
    assert {t["call_id"] for t in manifest["transcripts"]} >= set(before["transcripts"])

    # Restore into an empty data directory (serve keeps running on the old one).
    target = tmp_path / "restored"
    env = cli_env(loaded.config, PBX_BRIDGE_SERVER__DATA_DIR=str(target))
    code, out, err = await run_cli("restore", str(backup_dir), env=env, timeout=120)
    assert code == 0, err + out
    assert "every SHA-256 checked" in out
    restored_engine = make_engine(f"sqlite+aiosqlite:///{target / 'pbx-bridge.sqlite3'}")
    try:
        after = await state_of(restored_engine)
    finally:
        await restored_engine.dispose()
    for kind in ("calls", "clients", "recordings", "transcripts"):
        lost = {k: v for k, v in before[kind].items() if after[kind].get(k) != v}
        assert not lost, (kind, list(lost.items())[:3])
    for call_id, (_cid, stored_path, sha) in before["recordings"].items():
        wav = target / "recordings" / stored_path
        assert file_sha256(wav) == sha, call_id
    # The restored directory is a working one: the CLI reads it, its schema is current.
    code, out, err = await run_cli("db", "current", env=env)
    assert code == 0, out + err
    code, out, err = await run_cli("calls", "list", "--json", "--limit", "10000", env=env)
    assert code == 0 and {c["id"] for c in json.loads(out)} >= set(before["calls"])

    # A second restore over it is refused, and changes nothing.
    code, _out, err = await run_cli("restore", str(backup_dir), env=env)
    assert code == 1 and "restore only into an empty data directory" in err, err
    # A damaged backup restores nothing.
    wav = next(p for p in (backup_dir / "recordings").rglob("*.wav"))
    data = bytearray(wav.read_bytes())
    data[-1] ^= 0xFF
    wav.write_bytes(bytes(data))
    elsewhere = tmp_path / "elsewhere"
    env2 = cli_env(loaded.config, PBX_BRIDGE_SERVER__DATA_DIR=str(elsewhere))
    code, _out, err = await run_cli("restore", str(backup_dir), env=env2)
    assert code == 1 and "the backup is damaged, nothing restored" in err and wav.name in err, err
    assert not elsewhere.exists() or not any(elsewhere.rglob("*"))
    # A backup never writes into a directory that holds something.
    code, _out, err = await run_cli("backup", str(backup_dir), env=cli_env(loaded.config))
    assert code == 1 and "not an empty directory" in err, err


async def _at_least(engine: AsyncEngine, query: Any, n: int) -> bool:
    return await count(engine, query) >= n


async def test_backup_reports_a_recording_damaged_on_disk(loaded: Loaded, tmp_path: Path) -> None:
    ready = sa.select(sa.func.count()).select_from(recordings).where(recordings.c.state == "ready")
    await wait_until(lambda: _at_least(loaded.engine, ready, 1), 90, "a recording ready")
    async with loaded.engine.connect() as conn:
        row = (await conn.execute(sa.select(recordings.c.call_id, recordings.c.stored_path)
                                  .where(recordings.c.state == "ready").limit(1))).one()
    wav = loaded.data / "recordings" / row.stored_path
    data = bytearray(wav.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit flipped on disk
    wav.write_bytes(bytes(data))
    code, out, err = await run_cli("backup", str(tmp_path / "b"), env=cli_env(loaded.config), timeout=120)
    assert code == 1, out + err
    assert f"damaged: call {row.call_id}: {row.stored_path} differs" in out


async def test_restore_refuses_what_is_not_a_backup(tmp_path: Path) -> None:
    (tmp_path / "not-a-backup").mkdir()
    env = cli_env(PBX_BRIDGE_SERVER__DATA_DIR=str(tmp_path / "data"))
    code, _out, err = await run_cli("restore", str(tmp_path / "not-a-backup"), env=env)
    assert code == 1 and "no manifest.json: not a pbx-bridge backup" in err, err
    assert not (tmp_path / "data").exists()


async def test_restore_refuses_a_manifest_with_a_path_leading_out(tmp_path: Path) -> None:
    """A backup of an empty bridge whose manifest was edited to write outside the data dir."""
    source = tmp_path / "src"
    env = cli_env(PBX_BRIDGE_SERVER__DATA_DIR=str(source))
    code, _out, err = await run_cli("db", "upgrade", env=env)
    assert code == 0, err
    backup = tmp_path / "backup"
    code, out, err = await run_cli("backup", str(backup), env=env)
    assert code == 0, out + err
    outside = tmp_path / "outside.txt"
    evil = backup / "recordings" / "x.wav"
    evil.parent.mkdir()
    evil.write_bytes(b"not audio")
    manifest = json.loads((backup / "manifest.json").read_text())
    manifest["files"].append({"path": "recordings/../../outside.txt", "kind": "recording",
                              "size": 9, "sha256": hashlib.sha256(b"not audio").hexdigest(),
                              "call_id": 1})
    (backup / "manifest.json").write_text(json.dumps(manifest))
    target = tmp_path / "target"
    code, _out, err = await run_cli("restore", str(backup),
                                    env=cli_env(PBX_BRIDGE_SERVER__DATA_DIR=str(target)))
    assert code == 1 and "unsafe path" in err and "nothing restored" in err, err
    assert not outside.exists() and not target.exists()



@pytest.mark.postgres
async def test_postgres_backup_is_one_snapshot_while_writes_go_on(tmp_path: Path) -> None:
    """pg_dump of an exported snapshot, the manifest listed in the same snapshot: the restore's
    own check (counts, recordings, transcripts) holds although calls keep being written."""
    import uuid

    from tests.conftest import _pg_admin, _pg_url
    from tests.web_seed import insert_call

    names = [f"pbx_bridge_backup_{uuid.uuid4().hex[:8]}_{side}" for side in ("src", "dst")]
    for name in names:
        await _pg_admin(f'CREATE DATABASE "{name}"')
    src_url, dst_url = (_pg_url(n) for n in names)
    engine = make_engine(src_url)
    try:
        env = cli_env(PBX_BRIDGE_DATABASE__URL=src_url, PBX_BRIDGE_SERVER__DATA_DIR=str(tmp_path / "src"))
        code, _out, err = await run_cli("db", "upgrade", env=env)
        assert code == 0, err
        wav = tmp_path / "src" / "recordings" / "2026" / "11" / "20" / "1.wav"
        wav.parent.mkdir(parents=True)
        wav.write_bytes(b"RIFF" + bytes(range(256)) * 40)
        now = datetime.now(UTC)
        async with engine.begin() as conn:
            call = await insert_call(conn, pbx="lab")
            await conn.execute(sa.insert(clients).values(
                name="Анна", name_key="анна", tags=[], created_at=now, updated_at=now,
                last_activity_at=now))
            await conn.execute(sa.insert(recordings).values(
                call_id=call["id"], pbx="lab", linkedid=call["linkedid"], state="ready",
                segments=[], stored_path="2026/11/20/1.wav", sha256=file_sha256(wav),
                created_at=now, updated_at=now))
        await add_transcripts(engine, 1)
        before = await state_of(engine)
        assert len(before["transcripts"]) == 1

        writing = True

        async def writer() -> int:
            written = 0
            while writing:
                async with engine.begin() as conn:
                    await insert_call(conn, pbx="lab")
                written += 1
                await asyncio.sleep(0.005)
            return written

        task = asyncio.create_task(writer())
        code, out, err = await run_cli("backup", str(tmp_path / "backup"), env=env, timeout=120)
        writing = False
        written = await task
        assert code == 0, out + err
        assert written > 0
        assert (tmp_path / "backup" / "database.pgdump").is_file()

        env_dst = cli_env(PBX_BRIDGE_DATABASE__URL=dst_url, PBX_BRIDGE_SERVER__DATA_DIR=str(tmp_path / "dst"))
        code, out, err = await run_cli("restore", str(tmp_path / "backup"), env=env_dst, timeout=120)
        assert code == 0, out + err
        restored = make_engine(dst_url)
        try:
            after = await state_of(restored)
        finally:
            await restored.dispose()
        for kind in ("calls", "clients", "recordings", "transcripts"):
            assert all(after[kind].get(k) == v for k, v in before[kind].items()), kind
        assert file_sha256(tmp_path / "dst" / "recordings" / "2026/11/20/1.wav") == file_sha256(wav)
        # Restoring again into the now full database is refused.
        code, _out, err = await run_cli("restore", str(tmp_path / "backup"), env=env_dst, timeout=60)
        assert code == 1 and "not empty" in err, err
    finally:
        await engine.dispose()
        for name in names:
            await _pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
