"""The recording actions against the project's AMI simulator through the real PbxConnection,
and the whole path: simulator -> PbxConnection -> call tracker pipeline -> RecordingHook.

The simulator and PbxConnection come from branch `wire`, the call pipeline from branch
`tracker`; until they are merged this module is skipped (importorskip). Both tests were run by
hand on a scratch tree with those branches: MixMonitor `bD` on the operator's channel with the
file named after the Linkedid (exactly the trace's action), StopMixMonitor at the end, and the
file the simulator writes converted to a WAV equal, sample by sample, to the real recording.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from pbx_bridge.calls.changes import CallChange
from pbx_bridge.calls.record import CallRecord, Leg
from pbx_bridge.config import PbxConfig, Settings
from pbx_bridge.db.engine import make_sessionmaker
from pbx_bridge.db.schema import calls
from pbx_bridge.recording.hook import RecordingHook
from pbx_bridge.recording.service import RecordingService, simulator_locations
from pbx_bridge.runtime import Runtime
from pbx_bridge.simulator.trace import read_trace
from recordings import convert
from recordings.catalog import playable_file as catalog_playable

server = pytest.importorskip("pbx_bridge.simulator.server", reason="the simulator is not merged yet")
connection = pytest.importorskip("pbx_bridge.ami.connection", reason="PbxConnection is not merged yet")

LINKEDID = "519141ac-8349-46c7-8bc2-db8cbc411c84"
OPERATOR = "Local/101@operators-00000005;1"


async def test_recording_against_the_simulator(settings: Settings, engine: AsyncEngine, traces: Path,
                                               tmp_path: Path) -> None:
    sim: Any = server.AmiSimulator(server.SimulatorSettings(auth_fail_delay=0.05, seed=7,
                                                           spool_dir=tmp_path / "simspool"))
    await sim.start()
    frames = read_trace(traces / "inbound_answered_recorded.ami")
    # The call as it stood when the trace's client sent MixMonitor: the operator's channel is up.
    cut = next(i for i, f in enumerate(frames) if f.kind == "action" and "MixMonitor" in str(f.headers))
    await sim.replay([frames[:cut]], speed=0)
    queue: asyncio.Queue[Any] = asyncio.Queue()
    conn: Any = connection.PbxConnection(
        PbxConfig(name="lab", host="127.0.0.1", port=sim.port, username="bridge", secret="simulator",
                  asterisk_version="22.10.1"), queue)
    await conn.start()
    try:
        for _ in range(200):
            if conn.connected:
                break
            await asyncio.sleep(0.05)
        assert conn.connected
        settings.recordings.first_attempt_delay_seconds = 0.0
        runtime = Runtime(settings=settings, engine=engine, sessions=make_sessionmaker(engine))
        runtime.pbx["lab"] = conn
        service = RecordingService(runtime, locations=simulator_locations(
            settings.recordings, settings.data_path, tmp_path / "simspool"))
        hook = RecordingHook(service)
        now = datetime.now(UTC)
        async with engine.begin() as db:
            call_id = int((await db.execute(calls.insert().values(
                pbx="lab", linkedid=LINKEDID, state="live", operators_rung=["101"], transfers=[], tags=[],
                started_at=now, updated_at=now).returning(calls.c.id))).scalar_one())
        rec = CallRecord(pbx="lab", linkedid=LINKEDID, started_at=time.time(), direction="inbound",
                         operator="101", id=call_id,
                         legs=[Leg("lab-1795730007.16", OPERATOR, "operator", "101", time.time(),
                                   answered_at=time.time())])
        await hook.on_change(CallChange("answered", rec, extension="101"))
        await service.drain()
        await asyncio.sleep(1.0)  # the simulator writes audio for as long as it recorded
        rec.ended_at = time.time()
        await hook.on_change(CallChange("ended", rec))  # the operator's leg is still up: Stop
        await service.drain()
        sent = [(a.get("Action"), a.get("Channel"), a.get("File"), a.get("Options"))
                for a in sim.actions if a.get("Action") in ("MixMonitor", "StopMixMonitor")]
        assert sent == [("MixMonitor", OPERATOR, f"{LINKEDID}.raw", "bD"),
                        ("StopMixMonitor", OPERATOR, "", "")]
        done = await service.worker.run_once()
        assert [r.state for r in done] == ["ready"]
        assert done[0].stored_path is not None
        wav = convert.read_wav(service.locations.recordings_dir / done[0].stored_path)
        source = np.fromfile(traces / "recordings" / f"{LINKEDID}.raw", dtype="<i2").reshape(-1, 2)
        assert len(wav) >= 8000 * 0.9
        n = min(len(wav), len(source))
        assert np.array_equal(wav[:n], source[:n])
    finally:
        await conn.stop()
        await sim.stop()


async def test_whole_path_from_the_simulators_replay(settings: Settings, engine: AsyncEngine, traces: Path,
                                                     tmp_path: Path) -> None:
    consumer_mod: Any = pytest.importorskip("pbx_bridge.calls.consumer",
                                            reason="the call pipeline is not merged yet")
    sim: Any = server.AmiSimulator(server.SimulatorSettings(auth_fail_delay=0.05, seed=7,
                                                           spool_dir=tmp_path / "simspool"))
    await sim.start()
    cfg = PbxConfig(name="lab", host="127.0.0.1", port=sim.port, username="bridge", secret="simulator",
                    operator_channel=r"^Local/(?P<ext>1\d\d)@(operators|op-phone)-",
                    inbound_contexts=["from-trunk"], asterisk_version="22.10.1")
    settings.pbx = [cfg]
    settings.recordings.first_attempt_delay_seconds = 0.5
    queue: asyncio.Queue[Any] = asyncio.Queue()
    conn: Any = connection.PbxConnection(cfg, queue)
    runtime = Runtime(settings=settings, engine=engine, sessions=make_sessionmaker(engine))
    runtime.pbx["lab"] = conn
    service = RecordingService(runtime, locations=simulator_locations(
        settings.recordings, settings.data_path, tmp_path / "simspool"))
    service.start()
    consumer = consumer_mod.CallConsumer(queue, engine,
                                         consumer_mod.tracker_settings_for(settings.pbx, settings.phone),
                                         [RecordingHook(service)])
    task = asyncio.create_task(consumer.run())
    await conn.start()
    try:
        for _ in range(200):
            if conn.connected:
                break
            await asyncio.sleep(0.05)
        ready = runtime.bus.subscribe(lambda m: m.get("type") == "recording.ready")
        await sim.replay([traces / "inbound_answered_recorded.ami"], speed=2)
        message = await asyncio.wait_for(ready.get(), 30)
        assert message is not None
        sent = [(a.get("Action"), a.get("Channel"), a.get("File"), a.get("Options"))
                for a in sim.actions if "MixMonitor" in a.get("Action")]
        # What the trace's own client sent, now sent by the bridge.
        assert sent == [("MixMonitor", OPERATOR, f"{LINKEDID}.raw", "bD")]
        recording = message["recording"]
        assert recording["state"] == "ready" and message["extensions"] == ["101"]
        # Replayed at twice the speed: about half of the trace's 3.9 s of talk.
        assert 1.5 < recording["duration_seconds"] < 2.5
        async with engine.connect() as db:
            path = await catalog_playable(db, message["call_id"], service.locations.recordings_dir)
        assert path is not None
        wav = convert.read_wav(path)
        source = np.fromfile(traces / "recordings" / f"{LINKEDID}.raw", dtype="<i2").reshape(-1, 2)
        assert np.array_equal(wav, source[: len(wav)])
    finally:
        await service.stop()
        await consumer.stop()
        await task
        await conn.stop()
        await sim.stop()
