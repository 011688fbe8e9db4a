"""One recording per call, on the call's timeline, with segment files timed by real transfers.

The segment files here are written as MixMonitor (`bD`) writes them: from the moment it starts
to the channel's hang-up, only while the channel is in a bridge (the rest left out), left = what
the channel read, right = what it heard. Who read and heard what, and when, comes from the real
`sip_attended_transfer` trace (its events' Timestamps); for a blind transfer, for which the lab
has no trace, from the blind-transfer variant the simulator makes of that trace (transfers.py:
Asterisk's documented order for a two-party bridge; 102 rings 2 s as in the trace). Each party
speaks a tone of its own, so every output sample tells whose voice it is.

The events go through the bridge's own follower (pbx_bridge.recording.bridges), the segments
through recordings.finalize, and the WAV is checked sample by sample: talk-time long; 101 on the
left until the customer is put on hold; silence while the customer waits (the consultation
between 101 and 102 is not in it); 102 on the left from the transfer; the customer always right.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from pbx_bridge.ami.events import AmiEvent
from pbx_bridge.recording import bridges
from pbx_bridge.recording.bridges import BridgeFollower
from pbx_bridge.simulator.templates import broadcast_events, driving_actions
from pbx_bridge.simulator.trace import Frame, read_trace
from pbx_bridge.simulator.transfers import variants
from recordings import convert
from recordings.finalize import FinalizeOptions, convert_files
from recordings.mixmonitor import Segment, plan_segment
from recordings.storage import Locations

RATE = 8000
TONES = {"customer": 300.0, "101": 500.0, "102": 700.0, "moh": 440.0}


def tone(who: str | None, first: int, count: int) -> np.ndarray:
    if who is None:
        return np.zeros(count, dtype=np.int16)
    n = np.arange(first, first + count)
    return np.rint(3000 * np.sin(2 * math.pi * TONES[who] * n / RATE)).astype(np.int16)


def s(t: float) -> int:
    return round(t * RATE)


def events_of(frames: list[Frame]) -> list[AmiEvent]:
    out = []
    for f in frames:
        headers = {k: v for k, v in f.headers if k not in ("Event", "ChanVariable")}
        out.append(AmiEvent("pbx", f.name, headers, {}))
    return out


def at(frames: list[Frame], name: str, **fields: str) -> float:
    """The Timestamp of the first event `name` whose headers start with the given values."""
    for f in frames:
        if f.name == name and all(f.get(k).startswith(v) for k, v in fields.items()):
            return f.timestamp or 0.0
    raise AssertionError(f"no {name} {fields}")


def last(frames: list[Frame], name: str, channel: str) -> float:
    return [f.timestamp or 0.0 for f in frames if f.name == name and f.get("Channel") == channel][-1]


def monitor_started(channel: str, file: str, when: float) -> AmiEvent:
    """What Asterisk sends once MixMonitor runs: the file's name in a VarSet."""
    return AmiEvent("pbx", "VarSet", {"Timestamp": f"{when:.6f}", "Channel": channel,
                                      "Linkedid": "pbx-1796481291.248", "Variable": "MIXMONITOR_FILENAME",
                                      "Value": f"/var/spool/asterisk/monitor/{file}"}, {})


def write_segment(spool: Path, segment: Segment, pieces: list[tuple[float, float, str | None, str | None]]
                  ) -> None:
    """The `bD` file of a channel: for each bridged stretch [a, b), what it read and heard."""
    parts = [np.stack([tone(read, s(a), s(b) - s(a)), tone(heard, s(a), s(b) - s(a))], axis=1)
             for a, b, read, heard in pieces if s(b) > s(a)]
    (spool / segment.files["stereo"]).write_bytes(np.concatenate(parts).astype("<i2").tobytes())


def place(tmp_path: Path, history: bridges.CallHistory, segments: list[Segment], customer: str,
          answered: float, ended: float, operators: list[str]) -> np.ndarray:
    timed = [bridges.segment_times(history, seg, seg.files.values(), ended) for seg in segments]
    timeline = bridges.call_timeline(history, customer, answered, ended, operators)
    assert timeline.windows is not None
    options = FinalizeOptions(Locations("/var/spool/asterisk/monitor", tmp_path / "spool",
                                        tmp_path / "recordings"))
    outcome = convert_files(timed, 1, datetime(2026, 12, 5, tzinfo=UTC), options, last_attempt=False,
                            timeline=timeline)
    assert outcome.state == "ready" and outcome.wav is not None, outcome.error
    return convert.read_wav(outcome.wav.path)


def check(wav: np.ndarray, answered: float, ended: float,
          expected: list[tuple[float, float, str | None, str | None]]) -> None:
    """Sample by sample: (from, to, left speaker, right speaker) on the call's timeline."""
    origin = s(answered)
    assert len(wav) == s(ended) - origin  # talk time, answer to end
    covered = 0
    for a, b, left, right in expected:
        lo, hi = s(a) - origin, s(b) - origin
        assert np.array_equal(wav[lo:hi, 0], tone(left, s(a), hi - lo)), (a - answered, b - answered, left)
        assert np.array_equal(wav[lo:hi, 1], tone(right, s(a), hi - lo)), (a - answered, b - answered, right)
        covered += hi - lo
    assert covered == len(wav)


@pytest.fixture
def attended(traces: Path) -> list[Frame]:
    return broadcast_events(read_trace(traces / "sip_attended_transfer.ami"))


def follow(frames: list[Frame], extra: list[AmiEvent]) -> bridges.CallHistory:
    follower = BridgeFollower()
    for event in sorted([*events_of(frames), *extra], key=lambda e: e.timestamp):
        follower.feed(event)
    history = follower.take("pbx", "pbx-1796481291.248")
    assert history is not None and not history.gap
    return history


TRUNK, OP1, OP2 = "PJSIP/trunk-00000087", "PJSIP/101-00000088", "PJSIP/102-00000089"
LINKEDID = "pbx-1796481291.248"


def test_attended_transfer_recorded_on_the_customers_channel(attended: list[Frame], tmp_path: Path) -> None:
    """What the bridge does: one MixMonitor on the customer's channel, from just after the answer."""
    (tmp_path / "spool").mkdir()
    answered = at(attended, "DialEnd", DialStatus="ANSWER", Channel=TRUNK)
    ended = at(attended, "Hangup", Channel=TRUNK)
    hold = at(attended, "MusicOnHoldStart", Channel=TRUNK)
    transferred = at(attended, "MusicOnHoldStop", Channel=TRUNK)
    out_of_a = at(attended, "BridgeLeave", Channel=TRUNK)  # the Local optimization swaps it to C
    into_c = at(attended, "BridgeEnter", Channel=TRUNK, BridgeUniqueid="aa757f30")
    left_102 = at(attended, "BridgeLeave", Channel=OP2)  # 102 hangs up
    left_c = last(attended, "BridgeLeave", TRUNK)
    started = answered + 0.030
    segment = plan_segment(LINKEDID, 1, stereo=True, channel=TRUNK, operator="101", started_at=0.0,
                           perspective="customer")
    # From the customer's channel: read = the customer, heard = 101, hold music, then 102.
    write_segment(tmp_path / "spool", segment, [
        (started, hold, "customer", "101"), (hold, transferred, "customer", "moh"),
        (transferred, out_of_a, "customer", "102"), (into_c, left_102, "customer", "102"),
        (left_102, left_c, "customer", None)])
    history = follow(attended, [monitor_started(TRUNK, segment.files["stereo"], started)])
    wav = place(tmp_path, history, [segment], TRUNK, answered, ended, [OP1, OP2])
    assert wav.shape[1] == 2 and abs(len(wav) / RATE - 11.3) < 0.05  # the README's talk time
    check(wav, answered, ended, [
        (answered, started, None, None),  # before MixMonitor ran
        (started, hold, "101", "customer"),
        (hold, transferred, None, None),  # on hold: the consultation is not in it
        (transferred, out_of_a, "102", "customer"),
        (out_of_a, into_c, None, None),  # the optimization's swap (microseconds)
        (into_c, left_102, "102", "customer"),
        (left_102, ended, None, None)])  # 102 hung up: the customer alone


def test_three_overlapping_segments_are_placed_not_joined(attended: list[Frame], tmp_path: Path) -> None:
    """The issue's real case: segments on 101's, 102's and the customer's channels (as the bridge
    recorded them before), which overlap in time. Joined end to end they made 18.3 s with the
    consultation twice; placed, each moment comes from one of them, the consultation from none."""
    (tmp_path / "spool").mkdir()
    answered = at(attended, "DialEnd", DialStatus="ANSWER", Channel=TRUNK)
    ended = at(attended, "Hangup", Channel=TRUNK)
    hold = at(attended, "MusicOnHoldStart", Channel=TRUNK)
    consulting = at(attended, "BridgeEnter", Channel=OP1, BridgeUniqueid="1a5b9e72")
    answered_102 = at(attended, "BridgeEnter", Channel=OP2)
    transferred = at(attended, "MusicOnHoldStop", Channel=TRUNK)
    hung_101 = at(attended, "Hangup", Channel=OP1)
    swap = at(attended, "BridgeEnter", Channel=TRUNK, BridgeUniqueid="aa757f30")
    left_102 = at(attended, "BridgeLeave", Channel=OP2)
    left_c = last(attended, "BridgeLeave", TRUNK)
    start_1, start_2, start_3 = answered + 0.030, answered_102 + 0.030, transferred + 0.020
    one = plan_segment(LINKEDID, 1, stereo=True, channel=OP1, operator="101", started_at=0.0)
    two = plan_segment(LINKEDID, 2, stereo=True, channel=OP2, operator="102", started_at=0.0)
    three = plan_segment(LINKEDID, 3, stereo=True, channel=TRUNK, operator="102", started_at=0.0,
                         perspective="customer")
    spool = tmp_path / "spool"
    write_segment(spool, one, [(start_1, consulting, "101", "customer"),  # in bridge A, then B
                               (consulting, answered_102, "101", None),
                               (answered_102, hung_101, "101", "102")])
    write_segment(spool, two, [(start_2, transferred, "102", "101"),  # the consultation
                               (transferred, left_102, "102", "customer")])
    write_segment(spool, three, [(start_3, swap, "customer", "102"), (swap, left_102, "customer", "102"),
                                 (left_102, left_c, "customer", None)])
    history = follow(attended, [monitor_started(OP1, one.files["stereo"], start_1),
                                monitor_started(OP2, two.files["stereo"], start_2),
                                monitor_started(TRUNK, three.files["stereo"], start_3)])
    wav = place(tmp_path, history, [one, two, three], TRUNK, answered, ended, [OP1, OP2])
    assert abs(len(wav) / RATE - 11.3) < 0.05  # not 18.3 s
    check(wav, answered, ended, [
        (answered, start_1, None, None),
        (start_1, hold, "101", "customer"),  # 101's segment
        (hold, transferred, None, None),  # hold and consultation: in segments 1 and 2, not here
        (transferred, start_3, "102", "customer"),  # 102's segment until the customer's starts
        (start_3, swap, "102", "customer"), (swap, left_102, "102", "customer"),  # the customer's
        (left_102, ended, None, None)])


def test_blind_transfer(attended: list[Frame], traces: Path, tmp_path: Path) -> None:
    """The customer's channel leaves the bridge at the transfer and is in none while 102 rings
    (option b leaves that out of the file); the recording has silence there, at its place."""
    (tmp_path / "spool").mkdir()
    frames = read_trace(traces / "sip_attended_transfer.ami")
    blind = variants(broadcast_events(frames), driving_actions(frames))["BlindTransfer"].frames
    answered = at(blind, "DialEnd", DialStatus="ANSWER", Channel=TRUNK)
    ended = at(blind, "Hangup", Channel=TRUNK)
    transfer = at(blind, "BlindTransfer")
    out_of_a = at(blind, "BridgeLeave", Channel=TRUNK)
    into_c = at(blind, "BridgeEnter", Channel=TRUNK, BridgeUniqueid="aa757f30")
    left_102 = at(blind, "BridgeLeave", Channel=OP2)
    left_c = last(blind, "BridgeLeave", TRUNK)
    assert into_c - out_of_a > 2.0  # 102 rings 2 s
    started = answered + 0.030
    segment = plan_segment(LINKEDID, 1, stereo=True, channel=TRUNK, operator="101", started_at=0.0,
                           perspective="customer")
    write_segment(tmp_path / "spool", segment, [(started, out_of_a, "customer", "101"),
                                                (into_c, left_102, "customer", "102"),
                                                (left_102, left_c, "customer", None)])
    history = follow(blind, [monitor_started(TRUNK, segment.files["stereo"], started)])
    wav = place(tmp_path, history, [segment], TRUNK, answered, ended, [OP1, OP2])
    check(wav, answered, ended, [
        (answered, started, None, None), (started, out_of_a, "101", "customer"),
        (out_of_a, into_c, None, None),  # 102 ringing: nobody with the customer
        (into_c, left_102, "102", "customer"), (left_102, ended, None, None)])
    assert out_of_a - transfer < 0.01


def test_a_call_joined_in_the_middle_is_placed_by_what_was_seen(attended: list[Frame],
                                                                 tmp_path: Path) -> None:
    """The bridge connected after the customer's channel entered its bridge (a restart, a late
    start): its history lacks that BridgeEnter. The file still counts from MixMonitor's start
    (the channel is taken as bridged), and with the call's start unseen nothing is masked."""
    (tmp_path / "spool").mkdir()
    answered = at(attended, "DialEnd", DialStatus="ANSWER", Channel=TRUNK)
    ended = at(attended, "Hangup", Channel=TRUNK)
    joined = answered + 1.0  # the bridge's first event
    started = joined + 0.2
    out_of_a = at(attended, "BridgeLeave", Channel=TRUNK)
    into_c = at(attended, "BridgeEnter", Channel=TRUNK, BridgeUniqueid="aa757f30")
    left_c = last(attended, "BridgeLeave", TRUNK)
    seen = [f for f in attended if (f.timestamp or 0.0) >= joined]
    segment = plan_segment(LINKEDID, 1, stereo=True, channel=TRUNK, operator="101", started_at=0.0,
                           perspective="customer")
    write_segment(tmp_path / "spool", segment, [(started, out_of_a, "customer", "101"),
                                                (into_c, left_c, "customer", "102")])
    follower = BridgeFollower()
    for event in sorted([*events_of(seen), monitor_started(TRUNK, segment.files["stereo"], started)],
                        key=lambda e: e.timestamp):
        follower.feed(event)
    history = follower.take("pbx", LINKEDID)
    assert history is not None
    timed = bridges.segment_times(history, segment, segment.files.values(), ended)
    assert timed.recorded == ((started, out_of_a), (into_c, left_c))
    timeline = bridges.call_timeline(history, TRUNK, answered, ended)
    assert timeline.windows is None  # the answer was not seen: nothing to mask by
    options = FinalizeOptions(Locations("", tmp_path / "spool", tmp_path / "recordings"))
    outcome = convert_files([timed], 1, datetime(2026, 12, 5, tzinfo=UTC), options, last_attempt=False,
                            timeline=timeline)
    assert outcome.wav is not None
    check(convert.read_wav(outcome.wav.path), answered, ended, [
        (answered, started, None, None), (started, out_of_a, "101", "customer"),
        (out_of_a, into_c, None, None), (into_c, left_c, "102", "customer"), (left_c, ended, None, None)])


def test_the_follower_keeps_no_call_longer_than_needed() -> None:
    """Histories of calls nobody records go a while after their end, recorded ones when taken,
    and after a reconnect (events may be lost) the unrecorded ones at once."""
    def ev(name: str, channel: str, linkedid: str, at: float, **extra: str) -> AmiEvent:
        return AmiEvent("pbx", name, {"Channel": channel, "Linkedid": linkedid, "Timestamp": f"{at:.6f}",
                                      **extra}, {})

    follower = BridgeFollower(keep_seconds=120)
    follower.feed(ev("Newchannel", "PJSIP/trunk-1", "L1", 0.0))
    follower.feed(ev("BridgeEnter", "PJSIP/trunk-1", "L1", 1.0, BridgeUniqueid="b1"))
    follower.feed(ev("Hangup", "PJSIP/trunk-1", "L1", 2.0))
    follower.feed(ev("Newchannel", "PJSIP/trunk-2", "L2", 10.0))
    follower.watch("pbx", "L2")
    follower.feed(ev("Hangup", "PJSIP/trunk-2", "L2", 11.0))
    assert len(follower) == 2
    follower.feed(ev("Newchannel", "PJSIP/trunk-3", "L3", 300.0))
    follower.feed(ev("Hangup", "PJSIP/trunk-3", "L3", 301.0))  # L1 ended 299 s before: gone
    assert follower.take("pbx", "L1") is None
    taken = follower.take("pbx", "L2")  # watched: kept until taken
    assert taken is not None and [c.kind for c in taken.changes] == ["hangup"]
    assert follower.take("pbx", "L2") is None
    follower.feed(ev("Newchannel", "PJSIP/trunk-4", "L4", 400.0))
    follower.feed(ev("Newchannel", "PJSIP/trunk-5", "L5", 400.0))
    follower.watch("pbx", "L5")
    follower.feed(AmiEvent("pbx", "FullyBooted", {}, {}))  # reconnected
    assert follower.take("pbx", "L4") is None
    kept = follower.take("pbx", "L5")
    assert kept is not None and kept.gap
