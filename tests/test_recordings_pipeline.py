"""Call changes -> MixMonitor over a real TCP AMI session -> real spool files -> verified WAV -> row,
`recording.ready` and the client's timeline; retries, missing / empty / truncated files; retention.
On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from pbx_bridge.calls.changes import CallChange
from pbx_bridge.calls.record import CallRecord, Leg
from pbx_bridge.config import PbxConfig, RecordingOverrideConfig, Settings
from pbx_bridge.db.engine import make_sessionmaker
from pbx_bridge.db.schema import calls
from pbx_bridge.recording.hook import RecordingHook
from pbx_bridge.recording.service import RecordingService, TimelineLink
from pbx_bridge.runtime import Runtime
from recordings import catalog, convert
from recordings.catalog import RecordingRow
from recordings.schema import recordings
from tests.ami_recording_peer import AmiClient, AmiPeer, FakeSpoolWrite, running_peer

ASTERISK_SPOOL = "/var/spool/asterisk/monitor"
LAB_LINKEDID = "519141ac-8349-46c7-8bc2-db8cbc411c84"
LAB_OPERATOR = "Local/101@operators-00000005;1"
SIP_LINKEDID = "pbx-1795731456.0"
SIP_OPERATOR = "PJSIP/101-00000001"
T0 = 1795730007.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Env:
    runtime: Runtime
    service: RecordingService
    hook: RecordingHook
    peer: AmiPeer
    client: AmiClient
    clock: Clock
    spool: Path
    traces: Path
    engine: AsyncEngine

    @property
    def recordings_dir(self) -> Path:
        return self.service.locations.recordings_dir


def configure(settings: Settings, spool: Path, version: str = "") -> None:
    settings.recordings.spool_dir = ASTERISK_SPOOL
    settings.recordings.local_spool_dir = str(spool)
    settings.recordings.first_attempt_delay_seconds = 0.0
    settings.recordings.retry_attempts = 3
    settings.recordings.retry_delay_seconds = 2.0
    settings.recordings.signing_key = "test-signing-key-0123456789"
    settings.pbx = [PbxConfig(name="main", secret="secret", asterisk_version=version)]


@pytest.fixture
def asterisk_version() -> str:
    return "22.10.1"  # what the traces came from; tests parametrize others


@pytest.fixture
async def env(settings: Settings, engine: AsyncEngine, tmp_path: Path, traces: Path,
              asterisk_version: str) -> AsyncIterator[Env]:
    spool = tmp_path / "mount"
    spool.mkdir()
    version = asterisk_version
    configure(settings, spool)
    peer = AmiPeer(ASTERISK_SPOOL, spool, version=version)
    clock = Clock(T0)
    async with running_peer(peer) as client:
        runtime = Runtime(settings=settings, engine=engine, sessions=make_sessionmaker(engine))
        runtime.pbx["main"] = client
        service = RecordingService(runtime, now=clock)
        runtime.services["recordings"] = service
        yield Env(runtime, service, RecordingHook(service), peer, client, clock, spool, traces, engine)
        await service.stop()


async def insert_call(engine: AsyncEngine, linkedid: str, *, operator: str = "101",
                      rung: list[str] | None = None, client_id: int | None = None,
                      direction: str = "inbound", did: str = "+74951110000") -> int:
    now = datetime.fromtimestamp(T0, UTC)
    async with engine.begin() as conn:
        result = await conn.execute(calls.insert().values(
            pbx="main", linkedid=linkedid, state="live", direction=direction, did=did,
            customer_number="+74951234567", operator=operator, operators_rung=rung or [operator],
            transfers=[], tags=[], started_at=now, updated_at=now, client_id=client_id,
        ).returning(calls.c.id))
        return int(result.scalar_one())


def record(call_id: int, linkedid: str, operator_channel: str, *, ext: str = "101",
           direction: str = "inbound") -> CallRecord:
    return CallRecord(
        pbx="main", linkedid=linkedid, started_at=T0, direction=direction,  # type: ignore[arg-type]
        customer_number="+74951234567", did="+74951110000", operator=ext, operators_rung=[ext],
        answered_at=T0 + 2, id=call_id,
        legs=[
            Leg("u1", "Local/cust@customer-00000004;1", "customer", None, T0, answered_at=T0 + 2),
            Leg("u2", operator_channel, "operator", ext, T0 + 0.1, answered_at=T0 + 2),
        ],
    )


def ended(rec: CallRecord, *, still_up: tuple[str, ...] = ()) -> CallRecord:
    legs = [Leg(leg.uniqueid, leg.channel, leg.role, leg.extension, leg.created_at, leg.answered_at,
                None if leg.channel in still_up else T0 + 6) for leg in rec.legs]
    return CallRecord(**{**rec.__dict__, "legs": legs, "ended_at": T0 + 6, "status": "answered"})


async def end_call(env: Env, call_id: int) -> None:
    async with env.engine.begin() as conn:
        await conn.execute(calls.update().where(calls.c.id == call_id).values(state="ended"))


async def row_of(env: Env, call_id: int) -> RecordingRow:
    async with env.engine.connect() as conn:
        row = await catalog.get_by_call(conn, call_id)
    assert row is not None
    return row


def raw(traces: Path, linkedid: str) -> np.ndarray:
    return np.fromfile(traces / "recordings" / f"{linkedid}.raw", dtype="<i2").reshape(-1, 2)


async def test_answered_call_is_recorded_converted_and_announced(env: Env) -> None:
    env.peer.channels[LAB_OPERATOR] = FakeSpoolWrite(env.traces / "recordings" / f"{LAB_LINKEDID}.raw")
    call_id = await insert_call(env.engine, LAB_LINKEDID, client_id=77)
    rec = record(call_id, LAB_LINKEDID, LAB_OPERATOR)
    links: list[TimelineLink] = []

    async def on_timeline(link: TimelineLink) -> None:
        links.append(link)

    env.service.add_timeline_listener(on_timeline)
    events = env.runtime.bus.subscribe()

    await env.hook.on_change(CallChange("answered", rec, extension="101"))
    await env.service.drain()
    # The bridge asked for the version, then sent what the trace's client sent, with the path
    # as Asterisk sees it.
    sent = [a for a in env.peer.actions if a["Action"] == "MixMonitor"]
    assert len(sent) == 1
    assert {k: v for k, v in sent[0].items() if k != "ActionID"} == {
        "Action": "MixMonitor", "Channel": LAB_OPERATOR,
        "File": f"{ASTERISK_SPOOL}/{LAB_LINKEDID}.raw", "Options": "bD"}
    assert [a["Action"] for a in env.peer.actions] == ["Login", "CoreSettings", "MixMonitor"]
    row = await row_of(env, call_id)
    assert row.state == "recording" and row.linkedid == LAB_LINKEDID and row.rule == "default"
    assert (env.spool / f"{LAB_LINKEDID}.raw").exists()

    await end_call(env, call_id)
    await env.hook.on_change(CallChange("ended", ended(rec)))
    await env.service.drain()
    assert (await row_of(env, call_id)).state == "processing"
    # Every channel had hung up: no StopMixMonitor needed.
    assert not [a for a in env.peer.actions if a["Action"] == "StopMixMonitor"]
    done = await env.service.worker.run_once()
    assert [r.state for r in done] == ["ready"]

    row = await row_of(env, call_id)
    assert row.stored_path == f"2026/11/26/{call_id}.wav"
    wav_path = env.recordings_dir / row.stored_path
    stored = convert.read_wav(wav_path)
    source = raw(env.traces, LAB_LINKEDID)
    assert np.array_equal(stored, source)  # left = operator, right = customer, sample by sample
    assert row.sha256 == convert.sha256_of(wav_path)
    assert row.size_bytes == wav_path.stat().st_size
    assert row.duration_seconds == pytest.approx(len(source) / 8000)
    assert (row.channels, row.sample_rate, row.format) == (2, 8000, "wav")
    assert not (env.spool / f"{LAB_LINKEDID}.raw").exists()  # removed after verification
    assert row.attempts == 1 and row.last_error is None and row.ready_at is not None

    message = events.queue.get_nowait()
    assert message is not None
    assert message["type"] == "recording.ready" and message["call_id"] == call_id
    assert message["extensions"] == ["101"] and message["at"].endswith("Z")
    assert message["recording"]["sha256"] == row.sha256
    assert message["recording"]["url"] == f"/api/v1/calls/{call_id}/recording"
    assert [(lk.client_id, lk.call_id, lk.url) for lk in links] == [
        (77, call_id, f"/api/v1/calls/{call_id}/recording")]


@pytest.mark.parametrize("asterisk_version", ["20.10.0", "18.20.2"])
async def test_older_asterisk_gets_leg_files_merged(env: Env) -> None:
    env.peer.channels[SIP_OPERATOR] = FakeSpoolWrite(env.traces / "recordings" / f"{SIP_LINKEDID}.raw")
    call_id = await insert_call(env.engine, SIP_LINKEDID)
    rec = record(call_id, SIP_LINKEDID, SIP_OPERATOR)
    await env.hook.on_change(CallChange("answered", rec, extension="101"))
    await env.service.drain()
    sent = next(a for a in env.peer.actions if a["Action"] == "MixMonitor")
    prefix = f"{ASTERISK_SPOOL}/{SIP_LINKEDID}"
    assert sent["Options"] == f"br({prefix}.rx.raw)t({prefix}.tx.raw)"
    assert sent["File"] == f"{prefix}.mix.raw"
    await env.hook.on_change(CallChange("ended", ended(rec)))
    await env.service.drain()
    await env.service.worker.run_once()
    row = await row_of(env, call_id)
    assert row.state == "ready"
    assert row.stored_path is not None
    stored = convert.read_wav(env.recordings_dir / row.stored_path)
    assert np.array_equal(stored, raw(env.traces, SIP_LINKEDID))
    assert list(env.spool.iterdir()) == []  # legs and the mixed by-product removed


CUSTOMER = "Local/cust@customer-00000004;1"


async def test_transfer_records_the_rest_from_the_customers_channel(env: Env) -> None:
    """A blind transfer as the tracker reports it: `transferred` while 102's phone still rings.
    The rest of the call is recorded on the customer's channel (it stays, whoever answers);
    its directions are swapped back so the operator stays on the left."""
    new_channel = "Local/102@operators-00000007;1"
    env.peer.channels[LAB_OPERATOR] = FakeSpoolWrite(env.traces / "recordings" / f"{LAB_LINKEDID}.raw")
    # From the customer's channel: left = read from it = the customer.
    env.peer.channels[CUSTOMER] = FakeSpoolWrite(env.traces / "recordings" / f"{SIP_LINKEDID}.raw")
    env.peer.channels[new_channel] = FakeSpoolWrite(env.traces / "recordings" / f"{SIP_LINKEDID}.raw")
    call_id = await insert_call(env.engine, LAB_LINKEDID, rung=["101", "102"])
    rec = record(call_id, LAB_LINKEDID, LAB_OPERATOR)
    await env.hook.on_change(CallChange("answered", rec, extension="101"))
    hung_101 = Leg("u2", LAB_OPERATOR, "operator", "101", T0, T0 + 2, T0 + 4)
    rings_102 = Leg("u3", new_channel, "operator", "102", T0 + 4)
    ringing = CallRecord(**{**rec.__dict__, "operator": "102", "operators_rung": ["101", "102"],
                            "legs": [rec.legs[0], hung_101, rings_102]})
    await env.hook.on_change(CallChange("transferred", ringing, extension="102"))
    answered = CallRecord(**{**ringing.__dict__, "legs": [
        rec.legs[0], hung_101, Leg("u3", new_channel, "operator", "102", T0 + 4, T0 + 5)]})
    for _ in range(3):  # 102 answers: no further segment, the customer's channel has it all
        await env.hook.on_change(CallChange("updated", answered))
    # The call ends while the customer's channel is still up in the snapshot: StopMixMonitor.
    await env.hook.on_change(CallChange("ended", ended(answered, still_up=(CUSTOMER,))))
    await env.service.drain()
    monitors = [a for a in env.peer.actions if a["Action"] == "MixMonitor"]
    assert [(a["Channel"], a["File"], a["Options"]) for a in monitors] == [
        (LAB_OPERATOR, f"{ASTERISK_SPOOL}/{LAB_LINKEDID}.raw", "bD"),
        (CUSTOMER, f"{ASTERISK_SPOOL}/{LAB_LINKEDID}.s2.raw", "bD")]
    stops = [a for a in env.peer.actions if a["Action"] == "StopMixMonitor"]
    assert [a["Channel"] for a in stops] == [CUSTOMER]
    await env.service.worker.run_once()
    row = await row_of(env, call_id)
    assert row.state == "ready" and len(row.segments) == 2
    assert [(s.operator, s.perspective) for s in row.segments] == [("101", "operator"), ("102", "customer")]
    assert row.stored_path is not None
    stored = convert.read_wav(env.recordings_dir / row.stored_path)
    first, second = raw(env.traces, LAB_LINKEDID), raw(env.traces, SIP_LINKEDID)
    assert np.array_equal(stored[: len(first)], first)
    assert np.array_equal(stored[len(first):, 0], second[:, 1])  # operator 102 on the left
    assert np.array_equal(stored[len(first):, 1], second[:, 0])  # the customer on the right


async def test_lagging_mount_is_retried_until_the_file_appears(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    env.peer.channels[SIP_OPERATOR] = FakeSpoolWrite(env.traces / "recordings" / f"{SIP_LINKEDID}.raw",
                                                     skip=True)
    call_id = await insert_call(env.engine, SIP_LINKEDID)
    rec = record(call_id, SIP_LINKEDID, SIP_OPERATOR)
    await env.hook.on_change(CallChange("answered", rec, extension="101"))
    await env.hook.on_change(CallChange("ended", ended(rec)))
    await env.service.drain()
    caplog.set_level(logging.INFO)
    await env.service.worker.run_once()
    row = await row_of(env, call_id)
    assert (row.state, row.attempts) == ("processing", 1)
    assert row.last_error is not None and "missing" in row.last_error
    assert row.next_attempt_at == datetime.fromtimestamp(T0, UTC) + timedelta(seconds=2)
    assert "recording.retry" in caplog.text
    assert await env.service.worker.run_once() == []  # not due yet
    # The mount catches up.
    source = env.traces / "recordings" / f"{SIP_LINKEDID}.raw"
    (env.spool / f"{SIP_LINKEDID}.raw").write_bytes(source.read_bytes())
    env.clock.now += 2
    await env.service.worker.run_once()
    row = await row_of(env, call_id)
    assert (row.state, row.attempts, row.last_error) == ("ready", 2, None)


@pytest.mark.parametrize("damage", ["missing", "empty", "truncated"])
async def test_bad_file_is_marked_retried_and_reported(env: Env, damage: str,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    source = env.traces / "recordings" / f"{SIP_LINKEDID}.raw"
    env.peer.channels[SIP_OPERATOR] = FakeSpoolWrite(
        source, skip=damage == "missing", empty=damage == "empty",
        truncate_extra=b"\x01\x02\x03" if damage == "truncated" else b"")
    call_id = await insert_call(env.engine, SIP_LINKEDID)
    rec = record(call_id, SIP_LINKEDID, SIP_OPERATOR)
    await env.hook.on_change(CallChange("answered", rec, extension="101"))
    await env.hook.on_change(CallChange("ended", ended(rec)))
    await env.service.drain()
    events = env.runtime.bus.subscribe()
    caplog.set_level(logging.INFO)
    for attempt in (1, 2):
        await env.service.worker.run_once()
        row = await row_of(env, call_id)
        assert (row.state, row.attempts) == ("processing", attempt)
        env.clock.now += 60
    await env.service.worker.run_once()  # the last of retry_attempts = 3
    row = await row_of(env, call_id)
    assert row.attempts == 3 and row.next_attempt_at is None
    assert row.last_error is not None and damage in row.last_error
    if damage == "truncated":
        assert row.state == "truncated"
        assert "3 trailing bytes" in row.last_error
        assert row.stored_path is not None  # the whole frames are kept and playable
        stored = convert.read_wav(env.recordings_dir / row.stored_path)
        assert np.array_equal(stored, raw(env.traces, SIP_LINKEDID))
        assert (env.spool / f"{SIP_LINKEDID}.raw").exists()  # source kept: nothing lost
        message = events.queue.get_nowait()
        assert message is not None and message["recording"]["state"] == "truncated"
    else:
        assert row.state == "missing" and row.stored_path is None
        assert events.queue.empty()
    assert f"recording.{row.state}" in caplog.text
    assert await env.service.worker.run_once() == []  # finished: not retried again


async def test_policy_and_refusals(env: Env, settings: Settings) -> None:
    # Operator 105 is never recorded: no action at all.
    settings.recordings.operator_overrides = {"105": RecordingOverrideConfig(record=False)}
    service = RecordingService(env.runtime, now=env.clock)
    call_id = await insert_call(env.engine, "lab-1.1", operator="105")
    service.call_answered(record(call_id, "lab-1.1", "Local/105@operators-00000009;1", ext="105"), "105")
    await service.drain()
    assert not [a for a in env.peer.actions if a["Action"] == "MixMonitor"]
    async with env.engine.connect() as conn:
        assert await catalog.get_by_call(conn, call_id) is None
    # Asterisk refuses (the channel is gone): marked failed with Asterisk's words, no crash.
    call_id = await insert_call(env.engine, "lab-1.2")
    rec = record(call_id, "lab-1.2", "Local/101@operators-0000000a;1")
    await env.hook.on_change(CallChange("answered", rec, extension="101"))
    await env.hook.on_change(CallChange("ended", ended(rec)))
    await env.service.drain()
    row = await row_of(env, call_id)
    assert row.state == "failed" and row.last_error is not None and "No such channel" in row.last_error
    # A record without a database id is ignored with a log line, not an exception.
    no_id = record(1, "x", LAB_OPERATOR)
    no_id.id = None
    await env.hook.on_change(CallChange("answered", no_id, extension="101"))


async def test_restart_reconciles_calls_that_ended_unseen(env: Env) -> None:
    env.peer.channels[LAB_OPERATOR] = FakeSpoolWrite(env.traces / "recordings" / f"{LAB_LINKEDID}.raw")
    call_id = await insert_call(env.engine, LAB_LINKEDID)
    await env.hook.on_change(CallChange("answered", record(call_id, LAB_LINKEDID, LAB_OPERATOR), "101"))
    await env.service.drain()
    assert await env.service.reconcile() == 0  # still live
    await end_call(env, call_id)  # ended while the bridge was down: no `ended` change came
    assert await env.service.reconcile() == 1
    await env.service.worker.run_once()
    assert (await row_of(env, call_id)).state == "ready"


async def test_retention_deletes_old_recordings_except_legal_hold(env: Env, settings: Settings,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    settings.recordings.retention_days = 30
    settings.recordings.did_overrides = {"74951119999": RecordingOverrideConfig(retention_days=365)}
    service = RecordingService(env.runtime, now=env.clock)
    now = datetime.fromtimestamp(env.clock.now, UTC)
    ids = {}
    for name, age, rule, hold in [("old", 31, "default", False), ("held", 400, "default", True),
                                  ("young", 29, "default", False), ("did", 100, "did:+74951119999", False),
                                  ("did_old", 366, "did:+74951119999", False)]:
        call_id = await insert_call(env.engine, name)
        wav = service.locations.recordings_dir / f"{call_id}.wav"
        wav.parent.mkdir(parents=True, exist_ok=True)
        wav.write_bytes(b"RIFF")
        async with env.engine.begin() as conn:
            await conn.execute(recordings.insert().values(
                call_id=call_id, pbx="main", linkedid=name, state="ready", rule=rule, segments=[],
                stored_path=f"{call_id}.wav", created_at=now - timedelta(days=age), updated_at=now))
            await conn.execute(calls.update().where(calls.c.id == call_id).values(legal_hold=hold))
        ids[name] = call_id
    caplog.set_level(logging.INFO)
    report = await service.run_retention()
    assert sorted(report.deleted) == sorted([ids["old"], ids["did_old"]])
    assert report.held == [ids["held"]]
    for name, call_id in ids.items():
        row = await row_of(env, call_id)
        gone = name in ("old", "did_old")
        assert (row.state == "deleted") is gone, name
        assert (service.locations.recordings_dir / f"{call_id}.wav").exists() is not gone, name
    assert "recording.retention_deleted" in caplog.text and "recording.retention_held" in caplog.text
    # Lifting the hold lets the next run delete it.
    async with env.engine.begin() as conn:
        await conn.execute(calls.update().where(calls.c.id == ids["held"]).values(legal_hold=False))
    assert (await service.run_retention()).deleted == [ids["held"]]
    assert (await service.run_retention()).deleted == []
    async with env.engine.connect() as conn:
        states = (await conn.execute(sa.select(recordings.c.state))).scalars().all()
    assert sorted(states) == ["deleted", "deleted", "deleted", "ready", "ready"]


async def test_background_jobs_convert_without_being_asked(env: Env) -> None:
    """serve's wiring: the worker task wakes when a call ends and publishes the result."""
    env.peer.channels[LAB_OPERATOR] = FakeSpoolWrite(env.traces / "recordings" / f"{LAB_LINKEDID}.raw")
    call_id = await insert_call(env.engine, LAB_LINKEDID)
    rec = record(call_id, LAB_LINKEDID, LAB_OPERATOR)
    events = env.runtime.bus.subscribe()
    env.service.start()
    await env.hook.on_change(CallChange("answered", rec, extension="101"))
    await env.hook.on_change(CallChange("ended", ended(rec)))
    message = await asyncio.wait_for(events.get(), timeout=20)
    assert message is not None and message["type"] == "recording.ready"
    assert message["call_id"] == call_id and message["recording"]["state"] == "ready"
    await env.service.stop()
    assert (await row_of(env, call_id)).state == "ready"


async def test_unwritable_recordings_dir_fails_cleanly_and_keeps_the_sources(env: Env) -> None:
    env.peer.channels[SIP_OPERATOR] = FakeSpoolWrite(env.traces / "recordings" / f"{SIP_LINKEDID}.raw")
    call_id = await insert_call(env.engine, SIP_LINKEDID)
    rec = record(call_id, SIP_LINKEDID, SIP_OPERATOR)
    await env.hook.on_change(CallChange("answered", rec, extension="101"))
    await env.hook.on_change(CallChange("ended", ended(rec)))
    await env.service.drain()
    env.recordings_dir.parent.mkdir(parents=True, exist_ok=True)
    env.recordings_dir.write_text("a file where the directory should be")
    for _ in range(3):
        await env.service.worker.run_once()
        env.clock.now += 60
    row = await row_of(env, call_id)
    assert row.state == "failed" and row.attempts == 3
    assert row.last_error is not None and f"{call_id}.wav" in row.last_error
    assert (env.spool / f"{SIP_LINKEDID}.raw").exists()


async def test_compression_without_ffmpeg_is_skipped_cleanly(env: Env, settings: Settings,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    settings.recordings.compress = "opus"
    settings.recordings.ffmpeg_path = "/nonexistent/ffmpeg"  # as on this machine: no ffmpeg
    caplog.set_level(logging.INFO)
    service = RecordingService(env.runtime, now=env.clock)
    assert service.ffmpeg is None
    service.start()
    await service.stop()
    assert "recording.compression_unavailable" in caplog.text
    env.peer.channels[SIP_OPERATOR] = FakeSpoolWrite(env.traces / "recordings" / f"{SIP_LINKEDID}.raw")
    call_id = await insert_call(env.engine, SIP_LINKEDID)
    rec = record(call_id, SIP_LINKEDID, SIP_OPERATOR)
    service.call_answered(rec, "101")
    service.call_ended(ended(rec))
    await service.drain()
    await service.worker.run_once()
    row = await row_of(env, call_id)
    assert (row.state, row.compressed_path, row.last_error) == ("ready", None, None)
    assert row.stored_path is not None and (env.recordings_dir / row.stored_path).exists()


async def test_transfer_without_a_customer_channel_waits_for_the_new_operator(env: Env) -> None:
    """An internal call has no customer channel: the transfer's segment goes on the new
    operator's channel, once an update shows it answered (once, however many updates follow)."""
    new_channel = "PJSIP/102-00000004"
    env.peer.channels[SIP_OPERATOR] = FakeSpoolWrite(env.traces / "recordings" / f"{SIP_LINKEDID}.raw")
    env.peer.channels[new_channel] = FakeSpoolWrite(env.traces / "recordings" / f"{LAB_LINKEDID}.raw")
    call_id = await insert_call(env.engine, SIP_LINKEDID, rung=["101", "102"], direction="internal")
    rec = record(call_id, SIP_LINKEDID, SIP_OPERATOR, direction="internal")
    rec.legs = rec.legs[1:]  # no customer
    await env.hook.on_change(CallChange("answered", rec, extension="101"))
    hung_101 = Leg("u2", SIP_OPERATOR, "operator", "101", T0, T0 + 2, T0 + 4)
    rings_102 = Leg("u3", new_channel, "operator", "102", T0 + 4)
    ringing = CallRecord(**{**rec.__dict__, "legs": [hung_101, rings_102]})
    await env.hook.on_change(CallChange("transferred", ringing, extension="102"))
    await env.service.drain()
    assert len([a for a in env.peer.actions if a["Action"] == "MixMonitor"]) == 1
    assert (await row_of(env, call_id)).last_error is None  # waiting is not an error
    answered = CallRecord(**{**rec.__dict__, "operator": "102", "legs": [
        hung_101, Leg("u3", new_channel, "operator", "102", T0 + 4, T0 + 5)]})
    for _ in range(3):
        await env.hook.on_change(CallChange("updated", answered))
    await env.service.drain()
    monitors = [a for a in env.peer.actions if a["Action"] == "MixMonitor"]
    assert [a["Channel"] for a in monitors] == [SIP_OPERATOR, new_channel]
    assert monitors[1]["File"] == f"{ASTERISK_SPOOL}/{SIP_LINKEDID}.s2.raw"
    await env.hook.on_change(CallChange("ended", ended(answered)))
    await env.service.drain()
    await env.service.worker.run_once()
    row = await row_of(env, call_id)
    assert row.state == "ready" and [s.operator for s in row.segments] == ["101", "102"]
    assert row.stored_path is not None
    stored = convert.read_wav(env.recordings_dir / row.stored_path)
    both = np.concatenate([raw(env.traces, SIP_LINKEDID), raw(env.traces, LAB_LINKEDID)])
    assert np.array_equal(stored, both)


async def test_a_start_that_failed_is_tried_again_on_the_next_change(env: Env) -> None:
    call_id = await insert_call(env.engine, LAB_LINKEDID)
    rec = record(call_id, LAB_LINKEDID, LAB_OPERATOR)
    # Asterisk does not know the channel yet (refused) ...
    await env.hook.on_change(CallChange("answered", rec, extension="101"))
    await env.service.drain()
    assert (await row_of(env, call_id)).state == "failed"
    # ... then does: a later transfer/answer change starts the recording after all.
    env.peer.channels[LAB_OPERATOR] = FakeSpoolWrite(env.traces / "recordings" / f"{LAB_LINKEDID}.raw")
    await env.hook.on_change(CallChange("answered", rec, extension="101"))
    await env.service.drain()
    row = await row_of(env, call_id)
    assert row.state == "recording" and len(row.segments) == 1 and row.last_error is None


@dataclass
class Answer:
    """The shape of pbx_bridge.ami.connection.ActionResponse: headers in a `headers` mapping."""

    headers: dict[str, str]


class ConnectionShape:
    """PbxConnection's shape around the real TCP client: `.config` and send_action."""

    def __init__(self, client: AmiClient, version: str) -> None:
        self.config = PbxConfig(name="main", secret="secret", asterisk_version=version)
        self._client = client

    async def send_action(self, action: dict[str, str], timeout: float = 5.0) -> Answer:  # noqa: ASYNC109
        return Answer(await self._client.send_action(action, timeout))


@pytest.mark.parametrize(("configured", "stereo"), [("21.6.0", True), ("21.5.0", False)])
async def test_version_from_the_connections_own_config(env: Env, configured: str, stereo: bool) -> None:
    env.runtime.pbx["main"] = ConnectionShape(env.client, configured)
    env.peer.channels[SIP_OPERATOR] = FakeSpoolWrite(env.traces / "recordings" / f"{SIP_LINKEDID}.raw")
    call_id = await insert_call(env.engine, SIP_LINKEDID)
    await env.hook.on_change(CallChange("answered", record(call_id, SIP_LINKEDID, SIP_OPERATOR), "101"))
    await env.service.drain()
    assert [a["Action"] for a in env.peer.actions] == ["Login", "MixMonitor"]  # no CoreSettings
    assert (env.peer.actions[-1]["Options"] == "bD") is stereo


async def test_version_asked_with_core_settings_through_a_response_object(env: Env) -> None:
    env.runtime.pbx["main"] = ConnectionShape(env.client, "")
    env.peer.version = "20.11.2"
    env.peer.channels[SIP_OPERATOR] = FakeSpoolWrite(env.traces / "recordings" / f"{SIP_LINKEDID}.raw")
    call_id = await insert_call(env.engine, SIP_LINKEDID)
    await env.hook.on_change(CallChange("answered", record(call_id, SIP_LINKEDID, SIP_OPERATOR), "101"))
    await env.service.drain()
    assert [a["Action"] for a in env.peer.actions] == ["Login", "CoreSettings", "MixMonitor"]
    assert env.peer.actions[-1]["Options"] == "bD"


async def test_a_segment_that_was_never_bridged_does_not_spoil_the_recording(env: Env) -> None:
    """Transferred, then the customer hung up while the next phone rang: MixMonitor (option b)
    wrote an empty file for the second segment. Retried like any empty file, then ready."""
    env.peer.channels[LAB_OPERATOR] = FakeSpoolWrite(env.traces / "recordings" / f"{LAB_LINKEDID}.raw")
    env.peer.channels[CUSTOMER] = FakeSpoolWrite(env.traces / "recordings" / f"{SIP_LINKEDID}.raw",
                                                 empty=True)
    call_id = await insert_call(env.engine, LAB_LINKEDID, rung=["101", "102"])
    rec = record(call_id, LAB_LINKEDID, LAB_OPERATOR)
    await env.hook.on_change(CallChange("answered", rec, extension="101"))
    await env.hook.on_change(CallChange("transferred", rec, extension="102"))
    await env.hook.on_change(CallChange("ended", ended(rec)))
    await env.service.drain()
    for attempt in (1, 2):
        await env.service.worker.run_once()
        assert (await row_of(env, call_id)).state == "processing", attempt
        env.clock.now += 60
    await env.service.worker.run_once()
    row = await row_of(env, call_id)
    assert row.state == "ready" and row.stored_path is not None
    assert row.last_error == f"segment without audio: {LAB_LINKEDID}.s2.raw"
    stored = convert.read_wav(env.recordings_dir / row.stored_path)
    assert np.array_equal(stored, raw(env.traces, LAB_LINKEDID))
    assert list(env.spool.iterdir()) == []


async def test_calls_not_recorded_cost_no_lookup_and_a_recording_from_before_a_restart_ends(
    env: Env, settings: Settings
) -> None:
    """A started service knows which recordings were in progress before it: a call that the
    policy does not record, and that nobody records, costs no database look-up when it is
    answered or ends; a recording begun by the previous process is still stopped and finished."""
    env.peer.channels[LAB_OPERATOR] = FakeSpoolWrite(env.traces / "recordings" / f"{LAB_LINKEDID}.raw")
    before = await insert_call(env.engine, LAB_LINKEDID)
    rec_before = record(before, LAB_LINKEDID, LAB_OPERATOR)
    await env.hook.on_change(CallChange("answered", rec_before, extension="101"))
    await env.service.drain()
    assert (await row_of(env, before)).state == "recording"

    # The bridge restarts; recording is now off for operator 105.
    settings.recordings.operator_overrides = {"105": RecordingOverrideConfig(record=False)}
    service = RecordingService(env.runtime, now=env.clock)
    service.start()
    try:
        for _ in range(200):
            if service._from_before is not None:
                break
            await asyncio.sleep(0.01)
        assert service._from_before == {before}
        lookups: list[str] = []

        def count(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
            if "FROM recordings" in statement and "recordings.call_id =" in statement:
                lookups.append(statement)  # a call's look-up (not the converter's polling)

        sa.event.listen(env.engine.sync_engine, "before_cursor_execute", count)
        try:
            quiet = await insert_call(env.engine, "lab-quiet", operator="105")
            rec = record(quiet, "lab-quiet", "Local/105@operators-00000011;1", ext="105")
            service.call_answered(rec, "105")
            service.call_ended(ended(rec))
            await service.drain()
            assert lookups == []
            # The call recorded before the restart ends now: looked up, finished.
            await end_call(env, before)
            service.call_ended(ended(rec_before))
            await service.drain()
            assert lookups
        finally:
            sa.event.remove(env.engine.sync_engine, "before_cursor_execute", count)
        assert (await row_of(env, before)).state == "processing"
        async with env.engine.connect() as conn:
            assert await catalog.get_by_call(conn, quiet) is None
    finally:
        await service.stop()
