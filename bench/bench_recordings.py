"""Recordings: conversion speed (a long call's stereo .raw placed on its call's timeline ->
verified WAV, as the worker does it) against sox converting the file alone, and
playback over loopback HTTP (signed link, Range requests) against aiohttp's own FileResponse.

Run: /work/venv/bin/python -m bench.bench_recordings [--quick]
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from aiohttp import web

from pbx_bridge.config import Settings
from pbx_bridge.db import migrate
from pbx_bridge.db.engine import make_engine, make_sessionmaker
from pbx_bridge.db.schema import calls
from pbx_bridge.recording.service import RecordingService
from pbx_bridge.runtime import Runtime
from pbx_bridge.server.app import make_app
from recordings import convert, signing
from recordings.finalize import FinalizeOptions, convert_files
from recordings.mixmonitor import Segment
from recordings.schema import recordings
from recordings.storage import Locations
from recordings.timeline import CallTimeline, Window

ROOT = Path(__file__).resolve().parent.parent
RAW = ROOT.parent / "shared" / "ami-traces" / "recordings" / "pbx-1795731456.0.raw"


def _long_raw(directory: Path, minutes: float) -> tuple[Path, float]:
    """The real recording repeated to `minutes` of audio."""
    data = RAW.read_bytes()
    seconds_each = len(data) / convert.FRAME_BYTES / convert.SAMPLE_RATE
    copies = max(1, round(minutes * 60 / seconds_each))
    path = directory / "long.raw"
    path.write_bytes(data * copies)
    return path, copies * seconds_each


async def _requests_per_second(url: str, headers: dict[str, str], count: int, expect: int) -> float:
    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        for _ in range(count):
            async with session.get(url, headers=headers) as resp:
                assert resp.status == expect, resp.status
                await resp.read()
        return count / (time.perf_counter() - started)


async def _playback(tmp: Path, wav: Path, count: int) -> list[dict[str, object]]:
    settings = Settings()
    settings.server.data_dir = str(tmp / "var")
    settings.database.url = f"sqlite+aiosqlite:///{tmp / 'bench.sqlite3'}"
    engine = make_engine(settings.database.url)
    await migrate.upgrade(engine)
    now = datetime.now(UTC)
    runtime = Runtime(settings=settings, engine=engine, sessions=make_sessionmaker(engine))
    service = RecordingService(runtime)
    runtime.services["recordings"] = service
    stored = service.locations.recordings_dir / "2026/11/26/1.wav"
    stored.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(wav, stored)
    async with engine.begin() as conn:
        call_id = (await conn.execute(calls.insert().values(
            pbx="main", linkedid="bench", state="ended", operators_rung=[], transfers=[], tags=[],
            started_at=now, updated_at=now).returning(calls.c.id))).scalar_one()
        await conn.execute(recordings.insert().values(
            call_id=call_id, pbx="main", linkedid="bench", state="ready", segments=[],
            stored_path="2026/11/26/1.wav", created_at=now, updated_at=now))
    app = make_app(runtime)

    async def reference(_request: web.Request) -> web.FileResponse:
        return web.FileResponse(stored)

    # The reference is a bare aiohttp app of its own (the API's token middleware guards every
    # path of ours), served from the same process and event loop.
    ref_app = web.Application()
    ref_app.router.add_get("/reference.wav", reference)
    runner = web.AppRunner(app, access_log=None)
    ref_runner = web.AppRunner(ref_app, access_log=None)
    await runner.setup()
    await ref_runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    ref_site = web.TCPSite(ref_runner, "127.0.0.1", 0)
    await ref_site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    ref_port = ref_site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    token = signing.sign(service.signing_key, call_id, now=time.time(), ttl_seconds=3600).token
    ours_url = f"http://127.0.0.1:{port}/api/v1/recordings/signed/{token}"
    ref_url = f"http://127.0.0.1:{ref_port}/reference.wav"
    rows: list[dict[str, object]] = []
    try:
        rng = {"Range": "bytes=1000000-1065535"}
        ours = await _requests_per_second(ours_url, rng, count, 206)
        ref = await _requests_per_second(ref_url, rng, count, 206)
        rows.append({"figure": "Range requests (64 KiB from the middle, signed link, one client)",
                     "value": round(ours, 1), "unit": "requests/s", "target": ">= 200",
                     "reference": round(ref, 1), "reference_name": "aiohttp FileResponse, same file"})
        size = stored.stat().st_size
        whole = await _requests_per_second(ours_url, {}, max(3, count // 50), 200)
        whole_ref = await _requests_per_second(ref_url, {}, max(3, count // 50), 200)
        rows.append({"figure": f"whole-file playback ({size / 1e6:.0f} MB WAV)",
                     "value": round(whole * size / 1e6, 1), "unit": "MB/s", "target": "-",
                     "reference": round(whole_ref * size / 1e6, 1),
                     "reference_name": "aiohttp FileResponse (sendfile), same file"})
    finally:
        await runner.cleanup()
        await ref_runner.cleanup()
        await engine.dispose()
    return rows


def run(quick: bool = False) -> list[dict[str, object]]:
    minutes = 5.0 if quick else 30.0
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        raw, audio_seconds = _long_raw(Path(tmp), minutes)
        reference: float | None = None
        sox = convert.find_tool("sox")
        if sox is not None:
            started = time.perf_counter()
            convert.sox_convert_stereo_raw(raw, Path(tmp) / "sox.wav", sox)
            reference = audio_seconds / (time.perf_counter() - started)
        # As the worker does it: the customer's channel's file, placed on the call's timeline
        # (answered 1 s before MixMonitor started, a 30 s hold silenced in the middle), written
        # and read back.
        start = 1_800_000_000.0
        segment = Segment(1, "stereo", "PJSIP/trunk-1", "101", {"stereo": raw.name}, start,
                          "customer", ((start, start + audio_seconds),))
        middle = start + audio_seconds / 2
        end = start + audio_seconds
        timeline = CallTimeline(start - 1.0, end, "PJSIP/trunk-1", (
            Window(start, middle, ("PJSIP/101-2",)), Window(middle + 30, end, ("PJSIP/102-3",))))
        options = FinalizeOptions(Locations("", Path(tmp), Path(tmp) / "recordings"))
        started = time.perf_counter()
        outcome = convert_files([segment], 1, datetime.now(UTC), options, last_attempt=True,
                                timeline=timeline)
        ours = time.perf_counter() - started
        assert outcome.state == "ready" and outcome.wav is not None, outcome.error
        info = outcome.wav
        rows.append({
            "figure": f"conversion + placement + verification speed ({audio_seconds / 60:.0f} min call)",
            "value": round(audio_seconds / ours, 1), "unit": "x realtime", "target": ">= 100",
            "reference": None if reference is None else round(reference, 1),
            "reference_name": "sox conversion alone (no verification)" if sox else "sox not installed",
        })
        rows.append({
            "figure": "conversion + placement + verification throughput",
            "value": round(info.size_bytes / ours / 1e6, 1),
            "unit": "MB/s", "target": "-", "reference": None, "reference_name": "",
        })
        rows.extend(asyncio.run(_playback(Path(tmp), info.path, 100 if quick else 500)))
    return rows


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(row)
