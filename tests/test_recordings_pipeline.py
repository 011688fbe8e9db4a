"""Recordings through the real path: calls played by the simulated Asterisk over TCP, followed by
the bridge as `serve` assembles it (PbxConnection, the call pipeline, the recordings hook and
service), MixMonitor written by the simulator, converted by the bridge's worker into a verified
WAV, announced (`recording.ready`, the client's timeline); missing / empty / truncated files and
a lagging mount; versions without MixMonitor's D; refusals; restarts; retention. On SQLite and
PostgreSQL. Every WAV is checked sample by sample against what the simulator played.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from pbx_bridge.calls.record import CallRecord
from pbx_bridge.calls.store import list_calls
from pbx_bridge.config import RecordingOverrideConfig, Settings
from pbx_bridge.db.schema import calls
from pbx_bridge.recording.service import RecordingService, TimelineLink
from pbx_bridge.simulator import media
from pbx_bridge.simulator.server import ReceivedAction, Session
from pbx_bridge.simulator.trace import read_trace
from recordings import catalog, convert
from recordings.schema import recordings
from tests.conftest import TRACES
from tests.recording_rig import (
    channel_tracks,
    check_customer_recording,
    expected_tracks,
    rig,
    until,
    until_value,
)

pytestmark = pytest.mark.timeout(180)


async def test_answered_call_is_recorded_converted_and_announced(settings: Settings, engine: AsyncEngine,
                                                                 tmp_path: Path) -> None:
    async with rig(settings, engine, tmp_path) as r:
        links: list[TimelineLink] = []

        async def on_timeline(link: TimelineLink) -> None:
            links.append(link)

        r.running.recordings.add_timeline_listener(on_timeline)
        ready = r.running.runtime.bus.subscribe(lambda m: m.get("type") == "recording.ready")
        call = r.play("inbound_answered")
        record = await r.record_of(call)
        message = await asyncio.wait_for(ready.get(), 30)
        assert message is not None and record.id is not None
        row = await r.recording(record.id)
        # The version came from CoreSettings; MixMonitor went to the customer's channel, the file
        # named after the call's Linkedid, with Asterisk's path for it.
        assert [a.name for a in r.sim.actions if a.name in ("CoreSettings", "MixMonitor", "StopMixMonitor")] \
            == ["CoreSettings", "MixMonitor"]  # no Stop: every channel had hung up
        (sent,) = r.actions("MixMonitor")
        customer = next(leg.channel for leg in record.legs if leg.role == "customer")
        assert customer.startswith("Local/cust@customer-")
        assert (sent.get("Channel"), sent.get("File"), sent.get("Options")) == (
            customer, f"{r.spool}/{record.linkedid}.raw", "bD")
        assert row.linkedid == record.linkedid and row.rule == "default" and row.attempts == 1
        assert row.stored_path is not None and row.stored_path.endswith(f"/{record.id}.wav")
        wav_path = r.running.recordings.locations.recordings_dir / row.stored_path
        wav = convert.read_wav(wav_path)
        check_customer_recording(call, record, row, wav)
        assert row.duration_seconds == pytest.approx(record.talk_seconds, abs=0.001)
        assert (row.channels, row.sample_rate, row.format) == (2, 8000, "wav")
        assert row.sha256 == convert.sha256_of(wav_path) and row.size_bytes == wav_path.stat().st_size
        # A call's audio: the service's user and group only, whatever the process umask (issue 18).
        assert stat.S_IMODE(wav_path.stat().st_mode) == 0o640
        assert list(r.spool.iterdir()) == []  # removed once the WAV was read back
        assert message["call_id"] == record.id and message["extensions"] == ["101"]
        assert message["at"].endswith("Z") and message["recording"]["sha256"] == row.sha256
        assert message["recording"]["url"] == f"/api/v1/calls/{record.id}/recording"
        async with engine.connect() as conn:
            client_id = (await conn.execute(sa.select(calls.c.client_id).where(
                calls.c.id == record.id))).scalar_one()
        await until(lambda: bool(links), "the timeline link")  # after the message goes out
        assert [(lk.client_id, lk.call_id, lk.url) for lk in links] == [
            (client_id, record.id, f"/api/v1/calls/{record.id}/recording")]


async def test_a_replayed_real_trace_is_recorded(settings: Settings, engine: AsyncEngine,
                                                 tmp_path: Path) -> None:
    """The real SIP trace replayed (its own events and times, shifted to now) instead of a
    generated call: the bridge records the trunk channel it saw in them."""
    async with rig(settings, engine, tmp_path) as r:
        frames = read_trace(TRACES / "sip_inbound_answered_recorded.ami")
        await r.sim.replay([frames], speed=2.0, now_timestamps=True)

        async def ended() -> CallRecord | None:
            async with engine.connect() as conn:
                found = await list_calls(conn, limit=None)
            return found[0] if found and found[0].ended_at is not None else None

        record = await until_value(ended, "the replayed call ended")
        assert record.id is not None
        row = await r.recording(record.id)
        (sent,) = r.actions("MixMonitor")
        assert sent.get("Channel").startswith("PJSIP/trunk-")
        check_customer_recording(list(r.sim.table.history or []), record, row, r.wav(row))


@pytest.mark.parametrize("asterisk", ["20.10.0", "18.20.2"])
async def test_older_asterisk_gets_leg_files_merged(settings: Settings, engine: AsyncEngine,
                                                    tmp_path: Path, asterisk: str) -> None:
    async with rig(settings, engine, tmp_path, asterisk=asterisk) as r:
        call = r.play("outbound_answered")
        record = await r.record_of(call)
        assert record.id is not None
        row = await r.recording(record.id)
        (sent,) = r.actions("MixMonitor")
        prefix = f"{r.spool}/{record.linkedid}"
        assert sent.get("Options") == f"br({prefix}.rx.raw)t({prefix}.tx.raw)"
        assert sent.get("File") == f"{prefix}.mix.raw"
        check_customer_recording(call, record, row, r.wav(row))
        assert list(r.spool.iterdir()) == []  # the legs and the mixed by-product removed


async def test_lagging_mount_is_retried_until_the_file_appears(
    settings: Settings, engine: AsyncEngine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mount = tmp_path / "mount"  # the bridge's view of Asterisk's spool, lagging behind
    mount.mkdir()
    caplog.set_level(logging.INFO)
    async with rig(settings, engine, tmp_path, mount=mount, retry_attempts=20) as r:
        call = r.play("inbound_answered")
        record = await r.record_of(call)
        assert record.id is not None
        await until(lambda: "recording.retry" in caplog.text, "a retry")
        for _ in range(100):  # the attempt's row is written just after its log line
            row = await r.recording(record.id, ("processing",))
            if row.attempts:
                break
            await asyncio.sleep(0.02)
        assert row.attempts >= 1 and row.last_error is not None and "missing" in row.last_error
        for path in r.spool.iterdir():  # the mount catches up
            shutil.copy(path, mount / path.name)
        row = await r.recording(record.id)
        assert row.last_error is None and row.attempts >= 2
        check_customer_recording(call, record, row, r.wav(row))


@pytest.mark.parametrize("damage", ["missing", "empty", "truncated"])
async def test_bad_file_is_marked_retried_and_reported(settings: Settings, engine: AsyncEngine,
                                                       tmp_path: Path, damage: str,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    mount = tmp_path / "mount"
    mount.mkdir()
    caplog.set_level(logging.INFO)
    async with rig(settings, engine, tmp_path, mount=mount) as r:
        events = r.running.runtime.bus.subscribe(lambda m: m.get("type") == "recording.ready")
        call = r.play("inbound_answered")
        record = await r.record_of(call)
        assert record.id is not None
        await until(lambda: not any(r.sim.recorder.active(c) for c in (leg.channel for leg in record.legs)),
                    "MixMonitor closed its file")
        (written,) = r.spool.iterdir()
        if damage == "empty":
            (mount / written.name).write_bytes(b"")
        elif damage == "truncated":
            (mount / written.name).write_bytes(written.read_bytes() + b"\x01\x02\x03")
        row = await r.recording(record.id, ("missing", "truncated"), within=30)
        assert row.attempts == 3 and row.next_attempt_at is None
        assert row.last_error is not None and damage in row.last_error
        if damage == "truncated":
            assert row.state == "truncated" and "3 trailing bytes" in row.last_error
            check_customer_recording(call, record, row, r.wav(row))  # the whole frames, playable
            assert (mount / written.name).exists()  # the source kept: nothing lost
            message = await asyncio.wait_for(events.get(), 5)
            assert message is not None and message["recording"]["state"] == "truncated"
        else:
            assert row.state == "missing" and row.stored_path is None
            assert events.queue.empty()
        assert f"recording.{row.state}" in caplog.text


async def test_policy_and_refusals(settings: Settings, engine: AsyncEngine, tmp_path: Path) -> None:
    settings.recordings.operator_overrides = {"105": RecordingOverrideConfig(record=False)}
    async with rig(settings, engine, tmp_path) as r:
        # Operator 105 is never recorded: no action at all.
        record = await r.record_of(r.play("inbound_answered", operators=["105"]))
        assert record.operator == "105" and record.id is not None
        assert r.actions("MixMonitor") == [] and await r.row(record.id) is None
        # A call over before the bridge's MixMonitor arrives: Asterisk refuses (the channel is
        # gone), the recording is marked failed with Asterisk's words.
        r.sim.settings.speed = 2000.0
        record = await r.record_of(r.play("inbound_answered"))
        assert record.id is not None
        row = await r.recording(record.id, ("failed",))
        assert row.last_error is not None and "No such channel" in row.last_error
        assert not row.segments and row.stored_path is None


async def test_refused_customer_channel_falls_back_to_each_operators_channel(
    settings: Settings, engine: AsyncEngine, tmp_path: Path
) -> None:
    """Asterisk refuses MixMonitor on the customer's channel: the bridge records 101's channel,
    then 102's once 102 answers; the two overlapping segments are placed on the call's timeline
    (101 until the hold, 102 from the transfer, the consultation in neither's place)."""
    async with rig(settings, engine, tmp_path) as r:
        def refuse_trunk(session: Session, action: ReceivedAction) -> bool:
            if action.name == "MixMonitor" and action.get("Channel").startswith("PJSIP/trunk-"):
                session.write(f"Response: Error\r\nActionID: {action.get('ActionID')}\r\n"
                              "Message: Could not start monitoring channel\r\n\r\n".encode())
                return True
            return False

        r.sim.action_hook = refuse_trunk
        call = r.play("sip_attended_transfer", operators=["101", "102"])
        record = await r.record_of(call)
        assert record.id is not None
        row = await r.recording(record.id)
        assert [(s.channel.split("-")[0], s.perspective) for s in row.segments] == [
            ("PJSIP/101", "operator"), ("PJSIP/102", "operator")]
        assert row.timeline is not None and row.timeline.windows is not None
        wav = r.wav(row)
        assert record.answered_at is not None and record.ended_at is not None
        origin = media.sample_at(record.answered_at)
        assert len(wav) == media.sample_at(record.ended_at) - origin
        # Where each segment may speak: 101's while 101 talked with the customer, 102's after.
        first, second = row.segments
        for segment, party in ((first, "op:101"), (second, "op:102")):
            assert segment.recorded is not None
            for window in row.timeline.windows:
                if segment.channel not in window.channels:
                    continue
                for a, b in segment.recorded:
                    lo = media.sample_at(max(a, window.start)) - origin
                    hi = media.sample_at(min(b, window.end)) - origin
                    if hi - lo > 160:
                        assert np.array_equal(wav[lo:hi, 0], media.mix([party], origin + lo, hi - lo))
                        assert np.array_equal(wav[lo:hi, 1], media.mix(["customer"], origin + lo, hi - lo))
        # The consultation (101 and 102 talking while the customer waits) is nowhere in it.
        on_hold = next(w for w in row.timeline.windows if "PJSIP/101" in w.channels[0]).end
        transferred = next(w for w in row.timeline.windows if "PJSIP/102" in w.channels[0]).start
        assert transferred - on_hold > 3.0
        quiet = wav[media.sample_at(on_hold) - origin: media.sample_at(transferred) - origin]
        assert not quiet.any()


async def test_a_start_that_failed_is_tried_again_on_the_next_change(
    settings: Settings, engine: AsyncEngine, tmp_path: Path
) -> None:
    async with rig(settings, engine, tmp_path, speed=2.0) as r:
        refused: list[str] = []

        def refuse_once(session: Session, action: ReceivedAction) -> bool:
            if action.name == "MixMonitor" and len(refused) < 2:  # the customer's and 101's
                refused.append(action.get("Channel"))
                session.write(f"Response: Error\r\nActionID: {action.get('ActionID')}\r\n"
                              "Message: No such channel\r\n\r\n".encode())
                return True
            return False

        r.sim.action_hook = refuse_once
        call = r.play("sip_attended_transfer", operators=["101", "102"])
        record = await r.record_of(call)
        assert record.id is not None
        row = await r.recording(record.id)
        # Both MixMonitors at the answer were refused; a later change of the call (102 answering,
        # the transfer) tried again and succeeded.
        assert [c.split("-")[0] for c in refused] == ["PJSIP/trunk", "PJSIP/101"]
        assert row.segments and row.last_error is None
        assert any(s.perspective == "customer" for s in row.segments)  # accepted the second time


async def test_version_from_the_configuration_or_core_settings(settings: Settings, engine: AsyncEngine,
                                                               tmp_path: Path) -> None:
    for version, asterisk, stereo, asked in (("21.6.0", "22.10.1", True, False),
                                             ("21.5.0", "22.10.1", False, False),
                                             ("", "20.11.2", True, True)):
        async with rig(settings, engine, tmp_path / f"v{version}{asterisk}", version=version,
                       asterisk=asterisk) as r:
            record = await r.record_of(r.play("inbound_answered"))
            assert record.id is not None
            await r.recording(record.id)
            names = [a.name for a in r.sim.actions if a.name in ("CoreSettings", "MixMonitor")]
            assert names == (["CoreSettings"] if asked else []) + ["MixMonitor"], version
            assert (r.actions("MixMonitor")[0].get("Options") == "bD") is stereo


async def test_internal_call_is_recorded_on_the_answering_operators_channel(
    settings: Settings, engine: AsyncEngine, tmp_path: Path
) -> None:
    async with rig(settings, engine, tmp_path) as r:
        call = r.play("internal_call", operators=["101", "102"])
        record = await r.record_of(call)
        assert record.id is not None and record.direction == "internal"
        row = await r.recording(record.id)
        (segment,) = row.segments
        assert segment.perspective == "operator" and segment.channel.startswith("Local/102@operators-")
        assert row.timeline is not None and row.timeline.windows is None  # no customer
        wav = r.wav(row)
        assert record.answered_at is not None and record.ended_at is not None
        origin = media.sample_at(record.answered_at)
        assert segment.recorded is not None
        read, heard = channel_tracks(call, segment.channel, segment.started_at, record.ended_at)
        placed = np.concatenate([np.arange(media.sample_at(a), media.sample_at(b)) - origin
                                 for a, b in segment.recorded])
        assert len(placed) == len(read) and len(wav) == media.sample_at(record.ended_at) - origin
        assert np.array_equal(wav[placed, 0], read)  # left: 102 (whose channel it is)
        assert np.array_equal(wav[placed, 1], heard)  # right: what 102 heard (101)
        assert np.count_nonzero(heard) > 0.5 * len(heard)
        assert np.array_equal(heard[8000:16000], media.mix(["op:101"], origin + placed[8000], 8000))


async def test_restart_mid_call_still_gives_the_recording(settings: Settings, engine: AsyncEngine,
                                                          tmp_path: Path) -> None:
    """The bridge stops while a recorded call goes on; the call ends while it is down. The next
    bridge (the recordings from before a restart loaded, the calls resynced) finishes it. Having
    not seen the whole call, it places the customer's channel's file by its own times."""
    async with rig(settings, engine, tmp_path, speed=1.0) as r:
        call = r.play("inbound_answered")
        record = await r.record_of(call, ended=False)
        assert record.id is not None
        await r.recording(record.id, ("recording",))
        await r.stop_bridge()
        await until(lambda: call.done, "the call over while the bridge is down", 30)
        await r.start_bridge()
        row = await r.recording(record.id, within=30)
        assert row.timeline is None or row.timeline.windows is None
        wav = r.wav(row)
        (segment,) = row.segments
        assert segment.recorded is None  # what the bridge did not see, it does not claim
        # The file as MixMonitor wrote it, whole, from its start: where the customer's voice in it
        # begins on the sample clock, every later sample follows (nothing lost or doubled).
        right = wav[:, 1]
        near = media.sample_at(segment.started_at)
        first = next(x for x in range(near - 16000, near + 16000)
                     if np.array_equal(right[:800], media.mix(["customer"], x, 800)))
        assert len(wav) > 3.5 * 8000  # inbound_answered's 4.9 s of talk, minus MixMonitor's start
        assert np.array_equal(right, media.mix(["customer"], first, len(right)))


async def test_calls_not_recorded_cost_no_lookup(settings: Settings, engine: AsyncEngine,
                                                 tmp_path: Path) -> None:
    settings.recordings.operator_overrides = {"105": RecordingOverrideConfig(record=False)}
    async with rig(settings, engine, tmp_path) as r:
        await until(lambda: r.running.recordings._from_before is not None, "in-progress loaded")
        lookups: list[str] = []

        def count(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
            if "FROM recordings" in statement and "recordings.call_id =" in statement:
                lookups.append(statement)  # a call's look-up (not the converter's polling)

        sa.event.listen(engine.sync_engine, "before_cursor_execute", count)
        try:
            record = await r.record_of(r.play("inbound_answered", operators=["105"]))
            await r.running.recordings.drain()
            assert lookups == [] and record.id is not None
            record = await r.record_of(r.play("inbound_answered", operators=["101"]))
            assert record.id is not None
            await r.recording(record.id)
            assert lookups
        finally:
            sa.event.remove(engine.sync_engine, "before_cursor_execute", count)


async def test_retention_deletes_old_recordings_except_legal_hold(settings: Settings, engine: AsyncEngine,
                                                                  tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    settings.recordings.retention_days = 30
    settings.recordings.did_overrides = {"74951119999": RecordingOverrideConfig(retention_days=365)}
    async with rig(settings, engine, tmp_path) as r:
        service: RecordingService = r.running.recordings
        now = datetime.now(UTC)
        ids = {}
        for name, age, rule, hold in [("old", 31, "default", False), ("held", 400, "default", True),
                                      ("young", 29, "default", False),
                                      ("did", 100, "did:+74951119999", False),
                                      ("did_old", 366, "did:+74951119999", False)]:
            async with engine.begin() as conn:
                call_id = int((await conn.execute(calls.insert().values(
                    pbx="main", linkedid=name, state="ended", operators_rung=[], transfers=[], tags=[],
                    started_at=now, updated_at=now, legal_hold=hold).returning(calls.c.id))).scalar_one())
            wav = service.locations.recordings_dir / f"{call_id}.wav"
            wav.parent.mkdir(parents=True, exist_ok=True)
            wav.write_bytes(b"RIFF")
            async with engine.begin() as conn:
                await conn.execute(recordings.insert().values(
                    call_id=call_id, pbx="main", linkedid=name, state="ready", rule=rule, segments=[],
                    stored_path=f"{call_id}.wav", created_at=now - timedelta(days=age), updated_at=now))
            ids[name] = call_id
        caplog.set_level(logging.INFO)
        report = await service.run_retention()
        assert sorted(report.deleted) == sorted([ids["old"], ids["did_old"]])
        assert report.held == [ids["held"]]
        for name, call_id in ids.items():
            row = await r.row(call_id)
            assert row is not None
            gone = name in ("old", "did_old")
            assert (row.state == "deleted") is gone, name
            assert (service.locations.recordings_dir / f"{call_id}.wav").exists() is not gone, name
        assert "recording.retention_deleted" in caplog.text and "recording.retention_held" in caplog.text
        async with engine.begin() as conn:
            await conn.execute(calls.update().where(calls.c.id == ids["held"]).values(legal_hold=False))
        assert (await service.run_retention()).deleted == [ids["held"]]
        assert (await service.run_retention()).deleted == []


async def test_unwritable_recordings_dir_fails_cleanly_and_keeps_the_sources(
    settings: Settings, engine: AsyncEngine, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the directory should be")
    settings.recordings.recordings_dir = str(blocker)
    async with rig(settings, engine, tmp_path) as r:
        record = await r.record_of(r.play("inbound_answered"))
        assert record.id is not None
        row = await r.recording(record.id, ("failed",))
        assert row.attempts == 3 and row.last_error is not None and f"{record.id}.wav" in row.last_error
        assert [p.name for p in r.spool.iterdir()] == [f"{record.linkedid}.raw"]


async def test_compression_without_ffmpeg_is_skipped_cleanly(settings: Settings, engine: AsyncEngine,
                                                              tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    settings.recordings.compress = "opus"
    settings.recordings.ffmpeg_path = "/nonexistent/ffmpeg"
    caplog.set_level(logging.INFO)
    async with rig(settings, engine, tmp_path) as r:
        assert r.running.recordings.ffmpeg is None
        assert "recording.compression_unavailable" in caplog.text
        record = await r.record_of(r.play("inbound_answered"))
        assert record.id is not None
        row = await r.recording(record.id)
        assert (row.compressed_path, row.last_error) == (None, None)


def test_a_segment_without_audio_does_not_spoil_the_recording(tmp_path: Path) -> None:
    """With option b, a segment whose channel was never bridged leaves an empty file: retried
    like any empty file, then the recording is ready from the other segments, with a note."""
    from recordings.finalize import FinalizeOptions, convert_files
    from recordings.mixmonitor import plan_segment
    from recordings.storage import Locations

    spool = tmp_path / "spool"
    spool.mkdir()
    one = plan_segment("l-1", 1, stereo=True, channel="PJSIP/101-1", operator="101", started_at=100.0)
    two = plan_segment("l-1", 2, stereo=True, channel="PJSIP/102-2", operator="102", started_at=103.0)
    audio = np.stack([media.mix(["op:101"], 800_000, 16000), media.mix(["customer"], 800_000, 16000)], axis=1)
    (spool / one.files["stereo"]).write_bytes(audio.astype("<i2").tobytes())
    (spool / two.files["stereo"]).write_bytes(b"")
    options = FinalizeOptions(Locations("", spool, tmp_path / "rec"))
    when = datetime(2026, 12, 5, tzinfo=UTC)
    assert convert_files([one, two], 1, when, options, last_attempt=False).state == "retry"
    outcome = convert_files([one, two], 1, when, options, last_attempt=True)
    assert outcome.state == "ready" and outcome.wav is not None
    assert outcome.notes == [f"segment without audio: {two.files['stereo']}"]
    assert np.array_equal(convert.read_wav(outcome.wav.path), audio)
    assert list(spool.iterdir()) == []


async def test_background_jobs_and_the_transfer_through_the_bridge(settings: Settings, engine: AsyncEngine,
                                                                    tmp_path: Path) -> None:
    """An attended transfer driven by an AMI client (Atxfer, then 101 hangs up), as a CRM panel
    would: one recording, on the customer's channel, talk-time long, 101 then silence then 102."""
    async with rig(settings, engine, tmp_path) as r:
        call = r.play("sip_attended_transfer", operators=["101", "102"], interactive=True)
        first, second = (p.index for p in call.template.pauses)
        await until(lambda: call.index == first and call.pause is not None, "talking")
        operator = next(ch.fields["Channel"] for ch in call.channels()
                        if ch.fields["Channel"].startswith("PJSIP/101-"))
        connection = r.running.connections[0]
        # `Async: false`: Asterisk ignores it; panoramisk 1.4 needs it to read an answer that ends
        # in "successfully queued" (it looks for the Originate header and raises KeyError).
        await connection.send_action({"Action": "Atxfer", "Channel": operator, "Context": "transfer",
                                      "Exten": "102", "Async": "false"})
        await until(lambda: call.index == second and call.pause is not None, "consulting")
        await asyncio.sleep(0.3)
        await connection.send_action({"Action": "Hangup", "Channel": operator})
        record = await r.record_of(call)
        assert record.id is not None
        row = await r.recording(record.id)
        check_customer_recording(call, record, row, r.wav(row))
        assert record.talk_seconds is not None and record.talk_seconds > 6
        left = expected_tracks(call, row.segments[0].channel, row.segments[0].started_at,
                               record.answered_at or 0.0, record.ended_at or 0.0)[0]
        assert np.count_nonzero(left == 0) > 0.2 * len(left)  # the hold and consultation: silence


async def test_recordings_through_convert_catalog_roundtrip(settings: Settings, engine: AsyncEngine) -> None:
    """The segments' Asterisk times and the timeline survive the database (JSON)."""
    from recordings.mixmonitor import Segment
    from recordings.timeline import CallTimeline, Window

    segment = Segment(1, "stereo", "PJSIP/trunk-1", "101", {"stereo": "x.raw"}, 10.5, "customer",
                      ((10.5, 12.25), (14.0, 20.0)))
    timeline = CallTimeline(10.0, 20.0, "PJSIP/trunk-1", (Window(10.2, 12.25, ("PJSIP/101-2",)),))
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        await catalog.start_segment(conn, call_id=1, pbx="main", linkedid="x", rule="default",
                                    segment=Segment(1, "stereo", "PJSIP/trunk-1", "101", {"stereo": "x.raw"},
                                                    99.0, "customer"), now=now)
        assert await catalog.mark_processing(conn, 1, now=now, first_attempt_at=now, segments=[segment],
                                             timeline=timeline)
        row = await catalog.get_by_call(conn, 1)
    assert row is not None and row.segments == [segment] and row.timeline == timeline
