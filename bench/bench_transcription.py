"""Transcription throughput: audio seconds transcribed per wall second by the worker pool (one and
two worker processes, jobs from a real SQLite database, transcripts stored) against a bare vosk
loop over the same files in the same run; peak memory per worker.

Run: /work/venv/bin/python -m bench.bench_transcription [--quick]

Targets: pipeline with 1 worker >= 90 % of bare vosk; 2 workers >= 1.8 x one (2 cores). The
machine may be shared: the load average is reported with the figures.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import threading
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from pbx_bridge.db import migrate
from pbx_bridge.db.engine import make_engine
from recordings.transcription import jobs
from recordings.transcription.recognize import default_model_dir, load_model, read_wav
from recordings.transcription.worker import WorkerOptions, WorkerPool

ROOT = Path(__file__).resolve().parent.parent
RECORDINGS = ROOT.parent / "shared" / "ami-traces" / "recordings"
SOURCES = ("519141ac-8349-46c7-8bc2-db8cbc411c84.raw", "pbx-1795731456.0.raw")
RATE = 8000


def _call_wav(path: Path, repeats: int) -> float:
    """A stereo call made of the real recordings (both sides) repeated with pauses."""
    pieces = [np.fromfile(RECORDINGS / name, dtype="<i2").reshape(-1, 2) for name in SOURCES]
    gap = np.zeros((RATE, 2), dtype="<i2")
    parts = [p for _ in range(repeats) for piece in pieces for p in (piece, gap)]
    stereo = np.concatenate(parts)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(stereo.tobytes())
    return len(stereo) / RATE


def _bare_vosk(model: Any, files: list[Path]) -> tuple[float, float]:
    """vosk as its example uses it: per file, per channel, a recognizer with words.
    Returns (wall seconds, CPU seconds)."""
    import vosk

    started, cpu_started = time.perf_counter(), time.process_time()
    for path in files:
        audio = read_wav(path)
        for pcm in audio.channels:
            rec = vosk.KaldiRecognizer(model, audio.rate)
            rec.SetWords(True)
            for i in range(0, len(pcm), 8000):
                if rec.AcceptWaveform(pcm[i : i + 8000]):
                    json.loads(rec.Result())
            json.loads(rec.FinalResult())
    return time.perf_counter() - started, time.process_time() - cpu_started


class _MemoryWatch:
    """Peak RSS and PSS of the pool's worker processes, sampled while they work, and the CPU
    seconds they used (a figure the load of a shared machine does not distort much)."""

    def __init__(self, pool_pid: int) -> None:
        self.pool = psutil.Process(pool_pid)
        self.peak_rss = 0
        self.peak_pss = 0
        self.cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            for child in self.pool.children():
                try:
                    info = child.memory_full_info()
                except psutil.Error:
                    continue
                self.peak_rss = max(self.peak_rss, info.rss)
                self.peak_pss = max(self.peak_pss, info.pss)

    def sample_cpu(self) -> None:
        for child in self.pool.children():
            try:
                times = child.cpu_times()
            except psutil.Error:
                continue
            self.cpu[child.pid] = times.user + times.system

    @property
    def cpu_seconds(self) -> float:
        return sum(self.cpu.values())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


async def _pipeline(db_url: str, files: list[Path], processes: int) -> tuple[float, _MemoryWatch]:
    engine = make_engine(db_url)
    try:
        async with engine.begin() as conn:
            ids = [await jobs.enqueue(conn, call_id, str(path)) for call_id, path in enumerate(files, 1)]
        options = WorkerOptions(database_url=db_url, model_dir=str(default_model_dir()), lease_seconds=60,
                                poll_seconds=0.05, engine_factory=make_engine, owner_prefix="bench")
        pool = WorkerPool(options, processes)
        await asyncio.to_thread(pool.start)  # the model is loaded when this returns: not timed
        assert pool.pid is not None
        watch = _MemoryWatch(pool.pid)
        started = time.perf_counter()
        try:
            while True:
                async with engine.connect() as conn:
                    states = await jobs.job_states(conn, range(1, len(files) + 1))
                if all(s in ("done", "failed") for s in states.values()) and len(states) == len(ids):
                    watch.sample_cpu()
                    break
                await asyncio.sleep(0.05)
            elapsed = time.perf_counter() - started
        finally:
            watch.stop()
            await asyncio.to_thread(pool.stop)
        assert set(states.values()) == {"done"}, states
        return elapsed, watch
    finally:
        await engine.dispose()


async def _fresh_db(directory: Path, name: str) -> str:
    url = f"sqlite+aiosqlite:///{directory / name}"
    engine = make_engine(url)
    await migrate.upgrade(engine)
    await engine.dispose()
    return url


def run(quick: bool = False) -> list[dict[str, Any]]:
    n_files, repeats = (2, 3) if quick else (4, 3)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        files = [tmp / f"call{i}.wav" for i in range(n_files)]
        audio = sum(_call_wav(f, repeats) for f in files)
        model = load_model(default_model_dir())  # type: ignore[arg-type]
        bare_first, bare_cpu_first = _bare_vosk(model, files)
        del model
        one, watch_one = asyncio.run(_pipeline(asyncio.run(_fresh_db(tmp, "one.sqlite3")), files, 1))
        two, watch_two = asyncio.run(_pipeline(asyncio.run(_fresh_db(tmp, "two.sqlite3")), files, 2))
        model = load_model(default_model_dir())  # type: ignore[arg-type]
        bare_again, bare_cpu_again = _bare_vosk(model, files)  # again: how much did the load drift?
    load_after = os.getloadavg()[0]
    bare = (bare_first + bare_again) / 2
    bare_cpu = (bare_cpu_first + bare_cpu_again) / 2
    bare_speed, one_speed, two_speed = audio / bare, audio / one, audio / two
    mb = 1024 * 1024
    reference = "bare vosk loop, same files, same run"
    return [
        {"figure": "bare vosk: audio s per wall s (1 process)", "value": round(bare_speed, 3),
         "unit": "x", "target": "reference", "reference": None, "reference_name": ""},
        {"figure": "pipeline, 1 worker: audio s per wall s", "value": round(one_speed, 3), "unit": "x",
         "target": ">= 90 % of bare vosk", "reference": round(bare_speed, 3), "reference_name": reference},
        {"figure": "pipeline 1 worker / bare vosk", "value": round(100 * one_speed / bare_speed, 1),
         "unit": "%", "target": ">= 90", "reference": 100.0, "reference_name": reference},
        {"figure": "pipeline, 2 workers: audio s per wall s", "value": round(two_speed, 3), "unit": "x",
         "target": ">= 1.8 x one worker", "reference": round(one_speed, 3),
         "reference_name": "pipeline, 1 worker, same run"},
        {"figure": "2 workers / 1 worker", "value": round(two_speed / one_speed, 2), "unit": "x",
         "target": ">= 1.8", "reference": 1.0, "reference_name": "pipeline, 1 worker, same run"},
        {"figure": "CPU s per audio s: pipeline 1 worker / bare vosk (load-independent overhead)",
         "value": round(100 * watch_one.cpu_seconds / bare_cpu, 1), "unit": "%", "target": "<= 111",
         "reference": 100.0, "reference_name": reference},
        {"figure": "CPU s per audio s: 2 workers / 1 worker (parallel efficiency)",
         "value": round(100 * watch_two.cpu_seconds / watch_one.cpu_seconds, 1), "unit": "%",
         "target": "~100 (then 2 free cores give ~2x)", "reference": 100.0,
         "reference_name": "pipeline, 1 worker, same run"},
        {"figure": "peak RSS per worker (model pages shared copy-on-write are counted in each)",
         "value": round(max(watch_one.peak_rss, watch_two.peak_rss) / mb), "unit": "MB",
         "target": "report", "reference": None, "reference_name": ""},
        {"figure": "peak PSS per worker, 2 workers (shared pages split between them)",
         "value": round(watch_two.peak_pss / mb), "unit": "MB", "target": "report", "reference": None,
         "reference_name": ""},
        {"figure": "bare vosk drift between its two runs (machine load)",
         "value": round(100 * abs(bare_first - bare_again) / bare, 1), "unit": "%", "target": "report",
         "reference": None, "reference_name": ""},
        {"figure": f"audio per run ({n_files} stereo files); 1-min load before/after",
         "value": round(audio, 1), "unit": "s", "target": f"load {load_before:.1f} / {load_after:.1f}",
         "reference": None, "reference_name": ""},
    ]


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv[1:]):
        print(f"{row['figure']:<80} {row['value']:>10} {row['unit']:<3} target {row['target']}"
              + (f"  (reference {row['reference']}: {row['reference_name']})" if row["reference"] else ""))
