"""`pbx-bridge backup` of a big data directory while `serve` takes 20 calls/s.

The data directory holds 100,000 calls (half of them with a client card), 10,000 recordings
(stereo 8 kHz WAVs of 2 s each, 64 kB: their count, not their size, is what this measures, and
10,000 one-minute calls would be 19 GB) and 2,000 transcripts (`--quick`: 10,000 / 1,000 / 200).
`serve` runs on it as its own process, fed by the simulated PBX in this process at 20 new calls/s
(each call as long as its real trace), recording and converting the answered ones.

Figures: the backup's duration and size; the call pipeline's event lag (its histogram on
/metrics, read before and after each window) during the backup. Reference, same run, same
bridge, same load: the lag over the 20 s just before and the 20 s just after, without a backup.

Run: .venv/bin/python -m bench.bench_backup [--quick]
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import wave
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import sqlalchemy as sa

from crm_sync.schema import clients
from pbx_bridge.db import migrate
from pbx_bridge.db.engine import make_engine
from pbx_bridge.db.schema import calls
from pbx_bridge.simulator.server import AmiSimulator, SimulatorSettings
from recordings.schema import recordings
from recordings.transcription.schema import transcripts

ROOT = Path(__file__).resolve().parent.parent
LAB_OPERATORS = r"^Local/(?P<ext>1\d\d)@(operators|op-phone)-"
RATE = 20.0  # new calls per second while measuring
CHUNK = 5000


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wav_bytes(seed: int) -> bytes:
    """A 2 s stereo 8 kHz 16-bit WAV whose samples differ per recording."""
    import io

    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(os.urandom(16000 * 4 - 8) + seed.to_bytes(8, "little"))
    return buf.getvalue()


async def build_data_dir(data: Path, n_calls: int, n_recordings: int, n_transcripts: int) -> float:
    import hashlib

    started = time.perf_counter()
    engine = make_engine(f"sqlite+aiosqlite:///{data / 'pbx-bridge.sqlite3'}")
    try:
        await migrate.upgrade(engine)
        t0 = datetime.now(UTC) - timedelta(days=60)
        now = datetime.now(UTC)
        async with engine.begin() as conn:
            for first in range(1, n_calls // 2 + 1, CHUNK):
                ids = range(first, min(first + CHUNK, n_calls // 2 + 1))
                await conn.execute(sa.insert(clients), [
                    {"id": i, "name": f"Клиент {i}", "name_key": f"клиент {i}", "tags": [],
                     "auto_created": True, "created_at": t0, "updated_at": t0, "last_activity_at": t0}
                    for i in ids])
            for first in range(1, n_calls + 1, CHUNK):
                rows = []
                for i in range(first, min(first + CHUNK, n_calls + 1)):
                    start = t0 + timedelta(seconds=i * 50)
                    answered = i % 4 != 0
                    rows.append({
                        "id": i, "pbx": "lab", "linkedid": f"bench.{i}", "state": "ended",
                        "direction": "inbound", "status": "answered" if answered else "no_answer",
                        "missed": not answered, "customer_number": f"+7916{i:07d}",
                        "did": "+74951110000", "operator": "101" if answered else None,
                        "operators_rung": ["101"], "transfers": [], "started_at": start,
                        "answered_at": start + timedelta(seconds=5) if answered else None,
                        "ended_at": start + timedelta(seconds=65), "wait_seconds": 5.0,
                        "talk_seconds": 60.0 if answered else 0.0,
                        "client_id": (i + 1) // 2, "tags": [],
                        "updated_at": now, "crm_done_at": now, "source": "ami"})
                await conn.execute(sa.insert(calls), rows)
            recordings_dir = data / "recordings"
            for first in range(1, n_recordings + 1, CHUNK):
                rows = []
                for i in range(first, min(first + CHUNK, n_recordings + 1)):
                    start = t0 + timedelta(seconds=i * 50)
                    rel = f"{start:%Y/%m/%d}/{i}.wav"
                    path = recordings_dir / rel
                    path.parent.mkdir(parents=True, exist_ok=True)
                    blob = _wav_bytes(i)
                    path.write_bytes(blob)
                    rows.append({"call_id": i, "pbx": "lab", "linkedid": f"bench.{i}", "state": "ready",
                                 "segments": [], "stored_path": rel, "format": "wav", "channels": 2,
                                 "sample_rate": 8000, "duration_seconds": 2.0, "size_bytes": len(blob),
                                 "sha256": hashlib.sha256(blob).hexdigest(), "created_at": start,
                                 "updated_at": start, "ready_at": start})
                await conn.execute(sa.insert(recordings), rows)
            await conn.execute(sa.insert(transcripts), [
                {"call_id": i, "turns": [{"speaker": "customer", "start": 0.0, "end": 2.0,
                                          "text": "хочу вернуть заказ", "words": []}],
                 "plain_text": "хочу вернуть заказ", "analytics": {}, "language": "ru", "model": "bench",
                 "duration_seconds": 2.0, "created_at": now} for i in range(1, n_transcripts + 1)])
    finally:
        await engine.dispose()
    return time.perf_counter() - started


class Lag:
    """The call pipeline's lag histogram from /metrics: differences between two reads."""

    def __init__(self, text: str) -> None:
        self.buckets: list[tuple[float, float]] = []
        for bound, value in re.findall(
                r'^pbx_bridge_call_pipeline_event_lag_seconds_bucket\{le="([^"]+)"\} (\S+)$', text, re.M):
            self.buckets.append((float(bound), float(value)))
        self.sum = float(re.search(r"^pbx_bridge_call_pipeline_event_lag_seconds_sum (\S+)$", text,
                                   re.M).group(1))  # type: ignore[union-attr]
        self.count = self.buckets[-1][1] if self.buckets else 0.0

    def since(self, before: Lag) -> Window:
        return Window([(b, v - bv) for (b, v), (_b, bv) in zip(self.buckets, before.buckets, strict=True)],
                      self.sum - before.sum)


class Window:
    """Lag observations between two reads (cumulative bucket counts and their sum)."""

    def __init__(self, deltas: list[tuple[float, float]], total_seconds: float) -> None:
        self.deltas, self.total_seconds = deltas, total_seconds

    def __add__(self, other: Window) -> Window:
        return Window([(b, v + ov) for (b, v), (_b, ov) in zip(self.deltas, other.deltas, strict=True)],
                      self.total_seconds + other.total_seconds)

    def stats(self) -> dict[str, float]:
        """p99 interpolated within its bucket, as Prometheus's histogram_quantile does."""
        deltas = self.deltas
        total = deltas[-1][1]
        if total <= 0:
            return {"p99": float("nan"), "mean": float("nan"), "batches": 0}
        rank, lower, prev = 0.99 * total, 0.0, 0.0
        p99 = deltas[-2][0]
        for bound, cumulative in deltas:
            if cumulative >= rank:
                p99 = bound if bound == float("inf") else lower + (bound - lower) * (rank - prev) / max(
                    cumulative - prev, 1e-9)
                break
            lower, prev = bound, cumulative
        return {"p99": p99, "mean": self.total_seconds / total, "batches": total}


async def _metrics(http: aiohttp.ClientSession, base: str, token: str) -> Lag:
    async with http.get(f"{base}/metrics", headers={"Authorization": f"Bearer {token}"}) as resp:
        resp.raise_for_status()
        return Lag(await resp.text())


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pbx_bridge", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1800)


def _start_serve(env: dict[str, str], log: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "pbx_bridge", "serve"], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)


async def measure(quick: bool) -> list[dict[str, Any]]:
    n_calls, n_recordings, n_transcripts = (10_000, 1_000, 200) if quick else (100_000, 10_000, 2_000)
    work = Path(tempfile.mkdtemp(prefix="bench-backup-"))
    try:
        data = work / "data"
        data.mkdir()
        built = await build_data_dir(data, n_calls, n_recordings, n_transcripts)
        sim = AmiSimulator(SimulatorSettings(seed=5, spool_dir=work / "spool"))
        await sim.start()
        port = _free_port()
        config = work / "bridge.toml"
        config.write_text(f"""
[server]
port = {port}
data_dir = "{data}"
[logging]
level = "WARNING"
[transcription]
in_process = false
[recordings]
spool_dir = "{work / 'spool' / 'monitor'}"
[[pbx]]
name = "lab"
port = {sim.port}
secret = "simulator"
operator_channel = '{LAB_OPERATORS}'
inbound_contexts = ["from-trunk"]
asterisk_version = "22.10.1"
""")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PBX_BRIDGE_")}
        env.update(PYTHONPATH=str(ROOT), PBX_BRIDGE_CONFIG=str(config))
        token = _cli("tokens", "create", "--role", "manager", "--name", "bench", env=env).stdout.split()[-1]
        log = (work / "serve.log").open("wb")
        proc = _start_serve(env, log)
        base = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession() as http:
                for _ in range(120):
                    try:
                        await _metrics(http, base, token)
                        break
                    except aiohttp.ClientError:
                        await asyncio.sleep(0.5)
                sim.start_generator(RATE)
                await asyncio.sleep(10 if quick else 30)  # calls of every length in progress
                # Reference before: a window without a backup.
                window = 10.0 if quick else 20.0
                start_ref = await _metrics(http, base, token)
                await asyncio.sleep(window)
                before_backup = await _metrics(http, base, token)
                # The backup, timed, with the lag histogram read around it.
                started = time.perf_counter()
                done = await asyncio.to_thread(_cli, "backup", str(work / "backup"), env=env)
                took = time.perf_counter() - started
                after_backup = await _metrics(http, base, token)
                assert done.returncode == 0, done.stdout + done.stderr
                # Reference after: as long again, without a backup.
                await asyncio.sleep(window)
                end_ref = await _metrics(http, base, token)
                during = after_backup.since(before_backup).stats()
                reference = (before_backup.since(start_ref) + end_ref.since(after_backup)).stats()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
            log.close()
            await sim.stop()
        size = sum(p.stat().st_size for p in (work / "backup").rglob("*") if p.is_file())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    what = f"{n_calls:,} calls, {n_recordings:,} recordings, {n_transcripts:,} transcripts"
    return [
        {"figure": f"backup of {what} ({size / 2**20:,.0f} MB) under {RATE:g} calls/s",
         "value": took, "unit": "s", "target": "-", "reference": None,
         "reference_name": f"data dir built in {built:.0f} s"},
        {"figure": "event lag p99 during the backup", "value": during["p99"] * 1000, "unit": "ms",
         "target": "<= 2000", "reference": reference["p99"] * 1000,
         "reference_name": f"no backup: {window:.0f} s before and {window:.0f} s after"},
        {"figure": "event lag mean during the backup", "value": during["mean"] * 1000, "unit": "ms",
         "target": "-", "reference": reference["mean"] * 1000, "reference_name": "no backup"},
    ]


def run(quick: bool = False) -> list[dict[str, Any]]:
    return asyncio.run(measure(quick))


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        ref = f"  (reference {row['reference']:.1f}: {row['reference_name']})" \
            if row["reference"] is not None else f"  ({row['reference_name']})"
        print(f"{row['figure']}: {row['value']:.1f} {row['unit']}{ref}")
