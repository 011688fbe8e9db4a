"""The recordings path as `serve` runs it, for tests: the project's simulated Asterisk over TCP
(its own MixMonitor writing the files), the bridge as pbx_bridge.assembly builds it (PbxConnection,
the call pipeline, the recordings service, its worker), a real database.

What a recording must hold is computed from the simulator's side: which parties the customer's
channel heard at each moment of the call it played (its own history of bridges and hold music)
and the parties' voices on the absolute sample clock (pbx_bridge.simulator.media). The bridge's
own timeline is not used to check itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from pbx_bridge.assembly import Bridge, assemble
from pbx_bridge.calls.record import CallRecord
from pbx_bridge.calls.store import list_calls
from pbx_bridge.config import PbxConfig, Settings
from pbx_bridge.db.schema import calls
from pbx_bridge.simulator import media
from pbx_bridge.simulator.calls import CallValues, LiveCall
from pbx_bridge.simulator.embedded import simulator_pbx_config
from pbx_bridge.simulator.server import AmiSimulator, ReceivedAction, SimulatorSettings
from recordings import catalog, convert
from recordings.catalog import RecordingRow

SECRET = "rig-secret"
OPERATORS = simulator_pbx_config(Settings().simulator).operator_channel


@dataclass
class Rig:
    sim: AmiSimulator
    settings: Settings
    engine: AsyncEngine
    spool: Path  # Asterisk's monitor directory (the simulator writes there)
    mount: Path  # the same files as the bridge sees them (local_spool_dir)
    bridge: Bridge | None = None
    calls: list[LiveCall] = field(default_factory=list)

    @property
    def running(self) -> Bridge:
        assert self.bridge is not None, "the bridge is stopped"
        return self.bridge

    async def start_bridge(self) -> Bridge:
        """The bridge as serve assembles it, connected to the simulator."""
        self.bridge = assemble(dataclasses.replace(self.settings, pbx=list(self.settings.pbx)), self.engine)
        await self.bridge.start()
        await until(lambda: all(c.connected for c in self.running.connections), "connected")
        return self.bridge

    async def stop_bridge(self) -> None:
        if self.bridge is not None:
            await self.bridge.stop()
            self.bridge = None

    def play(self, trace: str, *, operators: Sequence[str] = ("101",),
             customer: str = "+74951234567", name: str = "Ivan Petrov",
             interactive: bool = False) -> LiveCall:
        call = self.sim.add_call(self.sim.template(trace),
                                 CallValues(customer=customer, customer_name=name, operators=list(operators)),
                                 interactive=interactive)
        self.calls.append(call)
        return call

    @staticmethod
    def linkedid(call: LiveCall) -> str:
        """The call's Linkedid: its first channel's."""
        return call.fill(next(ch.fields["Linkedid"] for state in call.template.states
                              for ch in state.values() if ch.fields.get("Linkedid")))

    def actions(self, name: str) -> list[ReceivedAction]:
        return [a for a in self.sim.actions if a.name == name]

    async def record_of(self, call: LiveCall, *, ended: bool = True, within: float = 30.0) -> CallRecord:
        linkedid = self.linkedid(call)

        async def found() -> CallRecord | None:
            async with self.engine.connect() as conn:
                for rec in await list_calls(conn, limit=None):
                    if rec.linkedid == linkedid and (rec.ended_at is not None or not ended):
                        return rec
            return None

        return await until_value(found, f"the call {linkedid} in the call log", within)

    async def recording(self, call_id: int, states: Sequence[str] = ("ready",),
                        within: float = 30.0) -> RecordingRow:
        async def found() -> RecordingRow | None:
            async with self.engine.connect() as conn:
                row = await catalog.get_by_call(conn, call_id)
            return row if row is not None and row.state in states else None

        return await until_value(found, f"recording of call {call_id} in {states}", within)

    async def row(self, call_id: int) -> RecordingRow | None:
        async with self.engine.connect() as conn:
            return await catalog.get_by_call(conn, call_id)

    def wav(self, row: RecordingRow) -> np.ndarray:
        assert row.stored_path is not None
        return convert.read_wav(self.running.recordings.locations.recordings_dir / row.stored_path)


async def until(predicate: Callable[[], bool], what: str, within: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not within {within} s")
        await asyncio.sleep(0.02)


async def until_value(get: Callable[[], Awaitable[Any]], what: str, within: float = 20.0) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value = await get()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not within {within} s")
        await asyncio.sleep(0.05)


def configure(settings: Settings, port: int, spool: Path, mount: Path, version: str = "",
              retry_attempts: int = 3, transcribe: bool = False) -> None:
    settings.server.port = 0
    settings.pbx = [PbxConfig(name="main", port=port, secret=SECRET, operator_channel=OPERATORS,
                              inbound_contexts=["from-trunk"], asterisk_version=version,
                              operator_dial_string="Local/{ext}@op-phone/n",
                              outbound_context="from-internal", ping_interval=1.0, ping_timeout=2.0,
                              reconnect_min=0.05, reconnect_max=0.3)]
    rec = settings.recordings
    rec.spool_dir = str(spool)  # as Asterisk sees it: absolute names in the action
    rec.local_spool_dir = str(mount)
    rec.first_attempt_delay_seconds = 0.3  # (1 s by default) Asterisk closes the file at the hang-up
    rec.retry_attempts = retry_attempts
    rec.retry_delay_seconds = 0.3
    rec.retry_max_delay_seconds = 0.6
    rec.signing_key = "rig-signing-key-0123456789"
    # The transcription workers (the vosk model loaded) only where a test is about transcripts.
    settings.transcription.in_process = transcribe
    settings.transcription.workers = 1
    settings.transcription.poll_seconds = 0.2


@asynccontextmanager
async def rig(settings: Settings, engine: AsyncEngine, tmp: Path, *, speed: float = 4.0,
              version: str = "", asterisk: str = "22.10.1", mount: Path | None = None,
              start: bool = True, retry_attempts: int = 3, transcribe: bool = False,
              **simulator: Any) -> AsyncIterator[Rig]:
    sim = AmiSimulator(SimulatorSettings(secret=SECRET, spool_dir=tmp / "asterisk", speed=speed, seed=7,
                                         auth_fail_delay=0.05, asterisk_version=asterisk,
                                         operators=("101", "102", "103", "105"), **simulator))
    await sim.start()
    spool = tmp / "asterisk" / "monitor"
    spool.mkdir(parents=True)
    configure(settings, sim.port, spool, mount or spool, version, retry_attempts, transcribe)
    out = Rig(sim, settings, engine, spool, mount or spool)
    try:
        if start:
            await out.start_bridge()
        yield out
    finally:
        await out.stop_bridge()
        await sim.stop()


# --- what the recording must hold --------------------------------------------------------------


def expected_tracks(call: LiveCall | media.History, customer: str, started: float, answered: float,
                    ended: float) -> tuple[np.ndarray, np.ndarray]:
    """(left, right) of the call's recording as the simulator played the call: from the answer to
    the end; where the customer's channel was recorded (from `started`) and bridged with someone
    it heard (not hold music), the operators it heard on the left and the customer on the right;
    silence everywhere else."""
    origin = media.sample_at(answered)
    total = media.sample_at(ended) - origin
    left = np.zeros(total, dtype=np.int16)
    right = np.zeros(total, dtype=np.int16)
    history = call.history() if isinstance(call, LiveCall) else call
    for span in media.spans(customer, history, started, ended):
        if not span.bridged or not span.hears or media.MOH in span.hears:
            continue
        lo, hi = media.sample_at(span.start) - origin, media.sample_at(span.end) - origin
        lo, hi = max(lo, 0), min(hi, total)
        if hi > lo:
            left[lo:hi] = media.mix(span.hears, origin + lo, hi - lo)
            right[lo:hi] = media.mix(["customer"], origin + lo, hi - lo)
    return left, right


def channel_tracks(call: LiveCall, channel: str, start: float, end: float) -> tuple[np.ndarray, np.ndarray]:
    """What MixMonitor bD on `channel` from `start` to `end` holds, as the simulator played the
    call: (read, heard), bridged time only."""
    reads, heard = [], []
    for span in media.spans(channel, call.history(), start, end):
        if span.bridged:
            first = media.sample_at(span.start)
            count = media.sample_at(span.end) - first
            reads.append(media.mix(span.reads, first, count))
            heard.append(media.mix(span.hears, first, count))
    return np.concatenate(reads), np.concatenate(heard)


def check_customer_recording(call: LiveCall | media.History, record: CallRecord, row: RecordingRow,
                             wav: np.ndarray) -> None:
    """The WAV sample by sample against what the simulator played."""
    (segment,) = row.segments
    assert segment.perspective == "customer"
    assert record.answered_at is not None and record.ended_at is not None
    left, right = expected_tracks(call, segment.channel, segment.started_at, record.answered_at,
                                  record.ended_at)
    assert len(wav) == len(left)  # the talk time
    assert np.array_equal(wav[:, 0], left)
    assert np.array_equal(wav[:, 1], right)
    assert np.count_nonzero(right) > 0.5 * len(right)  # not a recording of silence


async def call_ids(engine: AsyncEngine) -> list[int]:
    async with engine.connect() as conn:
        return [int(r) for r in (await conn.execute(sa.select(calls.c.id))).scalars()]
