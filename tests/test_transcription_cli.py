"""The transcription commands as a user runs them: real processes, the real model, real databases."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from pbx_bridge.db.schema import calls
from recordings.transcription import jobs
from tests.test_transcription_search import CALLS
from tests.transcription_audio import silence, two_sources_wav, write_wav
from tests.transcription_recordings import recordings_rows

ROOT = Path(__file__).resolve().parent.parent


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PBX_BRIDGE_")}
    env.update(extra)
    return env


def last_line(stderr: str) -> str:
    """The error line (opening the database logs alembic's INFO lines before it)."""
    return stderr.strip().splitlines()[-1]


def run_cli(*args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pbx_bridge", *args], capture_output=True,
                          text=True, env=cli_env(**env), cwd=ROOT, timeout=timeout)


@pytest.mark.vosk
def test_transcribe_files_prints_the_dialog_without_a_database(traces: Path, tmp_path: Path) -> None:
    good = two_sources_wav(traces, tmp_path / "call.wav", customer_offset=2.0)
    quiet = write_wav(tmp_path / "quiet.wav", silence(2.0), silence(2.0))
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFFjunk")
    # A database URL that cannot work proves no database is touched.
    result = run_cli("transcribe", str(good), str(broken), str(quiet),
                     PBX_BRIDGE_DATABASE__URL="postgresql+asyncpg://nobody@127.0.0.1:1/none",
                     PBX_BRIDGE_TRANSCRIPTION__REQUIRED_PHRASES='["안녕하세요"]')
    assert result.returncode == 1  # one file failed; the others were still transcribed
    out = result.stdout.splitlines()
    assert out[0].startswith(f"== {good} (6.9 s; talk: operator")
    assert any(line.startswith("[00:0") and "] operator: " in line for line in out)
    assert any("] customer: " in line for line in out)
    assert "tags: missing_phrase:안녕하세요" in out
    assert f"== {quiet} (2.0 s;" in result.stdout and "(no speech recognised)" in result.stdout
    assert result.stderr.strip() == "pbx-bridge: broken.wav: not a valid WAV file (not a WAVE file)"

    progress = run_cli("transcribe", "--progress", "always", str(good))
    assert progress.returncode == 0 and "transcribing: 100%" in progress.stderr
    assert progress.stdout.startswith(f"== {good}")

    as_json = run_cli("transcribe", "--json", str(good))
    assert as_json.returncode == 0, as_json.stderr
    (item,) = json.loads(as_json.stdout)
    speakers = {t["speaker"] for t in item["turns"]}
    assert speakers == {"operator", "customer"}
    assert all(w["start"] >= 2.0 for t in item["turns"] if t["speaker"] == "customer" for w in t["words"])


def test_transcribe_errors_are_one_line(tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "x.wav", silence(0.5))
    bad_model = run_cli("transcribe", str(wav), PBX_BRIDGE_TRANSCRIPTION__MODEL_DIR=str(tmp_path / "none"))
    assert bad_model.returncode == 1
    assert bad_model.stderr == f"pbx-bridge: vosk model directory {tmp_path / 'none'} does not exist\n"
    missing = run_cli("transcribe", str(tmp_path / "nope.wav"))
    assert (missing.returncode, missing.stderr) == (1, f"pbx-bridge: no such file: {tmp_path / 'nope.wav'}\n")
    nothing = run_cli("transcribe")
    assert nothing.returncode == 1 and "nothing to transcribe" in nothing.stderr
    both = run_cli("transcribe", str(wav), "--all-missing")
    assert both.returncode == 1 and "not both" in both.stderr
    for args in (["transcribe", "--call", "99999999999"], ["transcribe", "--call", "x"],
                 ["search", "--limit", "-1", "a"], ["worker", "--workers", "0"]):
        bad = run_cli(*args)
        assert bad.returncode == 2 and "is not a" in bad.stderr  # argparse's usage error
    bad_since = run_cli("transcribe", "--since", "last tuesday")
    assert bad_since.returncode == 1 and "is not a date" in bad_since.stderr
    bad_worker_model = run_cli("worker", PBX_BRIDGE_TRANSCRIPTION__MODEL_DIR=str(tmp_path),
                               PBX_BRIDGE_DATABASE__URL=f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite3'}")
    assert bad_worker_model.returncode == 1
    assert bad_worker_model.stderr.strip().splitlines() == [
        f"pbx-bridge: vosk model directory {tmp_path} is not a vosk model: missing am/final.mdl, "
        "conf/mfcc.conf, graph/HCLG.fst (or graph/HCLr.fst)"]


async def add_call(engine: AsyncEngine, call_id: int, started: datetime, operator: str = "101") -> None:
    async with engine.begin() as conn:
        await conn.execute(sa.insert(calls).values(
            id=call_id, pbx="main", linkedid=f"l{call_id}", started_at=started, updated_at=started,
            operators_rung=[], transfers=[], tags=[], operator=operator))


async def test_queue_jobs_from_the_command_line(engine: AsyncEngine, db_url: str, tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "x.wav", silence(0.5))
    queued = await asyncio.to_thread(run_cli, "transcribe", "--call", "5", "--wav", str(wav),
                                     PBX_BRIDGE_DATABASE__URL=db_url)
    assert queued.returncode == 0, queued.stderr
    assert queued.stdout == "queued 1 recording(s) for transcription\n"
    async with engine.connect() as conn:
        job = await jobs.latest_job_for_call(conn, 5)
    assert job is not None and (job.state, job.wav_path) == ("queued", str(wav))
    missing = await asyncio.to_thread(run_cli, "transcribe", "--all-missing", PBX_BRIDGE_DATABASE__URL=db_url)
    async with engine.connect() as conn:
        has_recordings = await conn.run_sync(lambda c: sa.inspect(c).has_table("recordings"))
    if has_recordings:  # the recordings feature is merged in: its table is empty
        assert (missing.returncode, missing.stdout) == (0, "queued 0 recording(s) for transcription\n")
    else:  # nothing to select from: one clear line
        assert missing.returncode == 1
        assert last_line(missing.stderr) == ("pbx-bridge: the database has no recordings table (with "
                                             "call_id) yet; queue a file with --call ID --wav FILE")


async def test_queue_selects_recorded_calls(engine: AsyncEngine, db_url: str, tmp_path: Path) -> None:
    """--since / --all-missing over the recordings feature's table (call_id, state, stored_path
    relative to the recordings directory): only playable recordings, none already queued."""
    for call_id, day in ((1, 1), (2, 5), (3, 9), (4, 7)):
        await add_call(engine, call_id, datetime(2026, 11, day, tzinfo=UTC))
    async with engine.begin() as conn:
        await jobs.enqueue(conn, 3, "/r/3.wav")  # already queued: not "missing"
    rows = [(1, 1, "ready", "/r/1.wav"), (2, 2, "truncated", "2026/11/05/2.wav"), (3, 3, "ready", "/r/3.wav"),
            (4, 4, "failed", None)]
    async with recordings_rows(engine, rows):
        since = await asyncio.to_thread(run_cli, "transcribe", "--since", "2026-11-04",
                                        PBX_BRIDGE_DATABASE__URL=db_url,
                                        PBX_BRIDGE_SERVER__DATA_DIR=str(tmp_path))
        assert since.stdout == "queued 2 recording(s) for transcription\n", since.stderr
        missing = await asyncio.to_thread(run_cli, "transcribe", "--all-missing",
                                          PBX_BRIDGE_DATABASE__URL=db_url)
        assert missing.stdout == "queued 1 recording(s) for transcription\n", missing.stderr
        async with engine.connect() as conn:
            found = (await conn.execute(sa.text(
                "SELECT call_id, wav_path FROM transcription_jobs ORDER BY id"))).all()
        assert [tuple(r) for r in found] == [
            (3, "/r/3.wav"), (2, str(tmp_path / "recordings/2026/11/05/2.wav")), (1, "/r/1.wav")]


async def test_search_command(engine: AsyncEngine, db_url: str) -> None:
    from recordings.transcription.store import save_transcript

    async with engine.begin() as conn:
        for call_id, res in CALLS.items():
            await save_transcript(conn, call_id, None, res)
    found = await asyncio.to_thread(run_cli, "search", "деньги", PBX_BRIDGE_DATABASE__URL=db_url)
    assert found.returncode == 0, found.stderr
    assert found.stdout == "call 3\t00:20.5\tcustomer: верните [деньги]\n"
    none = await asyncio.to_thread(run_cli, "search", "абракадабра", PBX_BRIDGE_DATABASE__URL=db_url)
    assert (none.returncode, none.stdout, last_line(none.stderr)) == (0, "", "no calls found")
    empty = await asyncio.to_thread(run_cli, "search", "--", "-деньги", PBX_BRIDGE_DATABASE__URL=db_url)
    assert empty.returncode == 1 and "no words to look for" in empty.stderr


@pytest.mark.vosk
async def test_worker_command_runs_jobs_until_stopped(engine: AsyncEngine, db_url: str, traces: Path,
                                                      tmp_path: Path) -> None:
    wav = two_sources_wav(traces, tmp_path / "call.wav", customer_offset=2.0)
    await add_call(engine, 9, datetime.now(UTC))
    async with engine.begin() as conn:
        job_id = await jobs.enqueue(conn, 9, str(wav))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pbx_bridge", "worker", "--workers", "1", cwd=ROOT,
        env=cli_env(PBX_BRIDGE_DATABASE__URL=db_url, PBX_BRIDGE_TRANSCRIPTION__KEYWORDS='["민박"]'),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            async with engine.connect() as conn:
                job = await jobs.get_job(conn, job_id)
            if job is not None and job.state in ("done", "failed"):
                break
            await asyncio.sleep(0.2)
        assert job is not None and job.state == "done", job
        async with engine.connect() as conn:
            tags = (await conn.execute(sa.select(calls.c.tags).where(calls.c.id == 9))).scalar()
        assert tags == ["keyword:민박"]  # the operator's real audio says it
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err_bytes = await asyncio.wait_for(proc.communicate(), 60)
    err = err_bytes.decode()
    assert proc.returncode == 0, err
    assert "transcription workers running: 1" in err


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_serve_with_a_bad_model_dir_stops_with_one_line(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite3'}"
    up = await asyncio.to_thread(run_cli, "db", "upgrade", PBX_BRIDGE_DATABASE__URL=url)
    assert up.returncode == 0, up.stderr
    result = await asyncio.to_thread(
        run_cli, "serve", "--port", str(free_port()), timeout=60, PBX_BRIDGE_DATABASE__URL=url,
        PBX_BRIDGE_TRANSCRIPTION__MODEL_DIR=str(tmp_path / "no-model"),
        PBX_BRIDGE_SIMULATOR__ENABLED="false")
    assert result.returncode == 1
    assert last_line(result.stderr) == (
        f"pbx-bridge: transcription: vosk model directory {tmp_path / 'no-model'} does not exist")


@pytest.mark.vosk
async def test_serve_runs_workers_in_process(engine: AsyncEngine, db_url: str, traces: Path,
                                             tmp_path: Path) -> None:
    import psutil

    wav = two_sources_wav(traces, tmp_path / "call.wav", customer_offset=2.0)
    await add_call(engine, 11, datetime.now(UTC))
    async with engine.begin() as conn:
        job_id = await jobs.enqueue(conn, 11, str(wav))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pbx_bridge", "serve", "--port", str(free_port()), cwd=ROOT,
        env=cli_env(PBX_BRIDGE_DATABASE__URL=db_url, PBX_BRIDGE_TRANSCRIPTION__WORKERS="1",
                    PBX_BRIDGE_SIMULATOR__ENABLED="false", PBX_BRIDGE_SERVER__DATA_DIR=str(tmp_path)),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        job = None
        while time.monotonic() < deadline:
            async with engine.connect() as conn:
                job = await jobs.get_job(conn, job_id)
            if job is not None and job.state in ("done", "failed"):
                break
            await asyncio.sleep(0.2)
        assert job is not None and job.state == "done", job
        helpers = psutil.Process(proc.pid).children(recursive=True)
        assert any("spawn_main" in " ".join(p.cmdline()) for p in helpers)  # the pool and its worker
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0, err.decode()
    # serve logs to standard output (a service's output is its log: journald, docker logs).
    assert "transcription.workers.started processes=1" in out.decode()
    await asyncio.sleep(1)
    assert not [p for p in helpers if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
