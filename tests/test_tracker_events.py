"""The tracker on hand-made event sequences (production-style PJSIP names): transfers, pickups,
outcomes, restarts, and junk that must never raise nor harm other calls."""

from __future__ import annotations

import re
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pbx_bridge.ami.events import AmiEvent, ChannelsSnapshot
from pbx_bridge.calls.changes import CallChange
from pbx_bridge.calls.record import CallRecord, Leg
from pbx_bridge.calls.tracker import CallTracker, TrackerSettings
from tests.tracker_support import EXPECTED, check_record, close, ended, feed_all, load_items, summary
from tests.tracker_support import settings_for as trace_settings

SETTINGS = TrackerSettings(
    pbx="pbx",
    operator_channel=re.compile(r"^(?:PJSIP|SIP)/(?P<ext>\d{2,5})-"),
    inbound_contexts=frozenset({"from-trunk"}),
)
T0 = 1_800_000_000.0


def snap(
    prefix: str,
    channel: str,
    uid: str,
    linkedid: str,
    context: str = "",
    exten: str = "",
    cid: str = "",
    name: str = "",
    state: str = "",
) -> dict[str, str]:
    h = {f"{prefix}Channel": channel, f"{prefix}Uniqueid": uid, f"{prefix}Linkedid": linkedid}
    for key, value in (
        ("Context", context),
        ("Exten", exten),
        ("CallerIDNum", cid),
        ("CallerIDName", name),
        ("ChannelState", state),
    ):
        if value:
            h[prefix + key] = value
    return h


class Pbx:
    """Builds events for a few PJSIP channels, by short names."""

    def __init__(self) -> None:
        self.ch: dict[str, dict[str, str]] = {}

    def chan(
        self,
        key: str,
        channel: str,
        uid: str,
        linkedid: str,
        context: str,
        exten: str,
        cid: str = "",
        name: str = "",
    ) -> None:
        self.ch[key] = {
            "channel": channel,
            "uid": uid,
            "linkedid": linkedid,
            "context": context,
            "exten": exten,
            "cid": cid,
            "name": name,
        }

    def h(self, key: str, prefix: str = "") -> dict[str, str]:
        c = self.ch[key]
        return snap(
            prefix, c["channel"], c["uid"], c["linkedid"], c["context"], c["exten"], c["cid"], c["name"]
        )

    def ev(
        self, name: str, t: float, key: str | None = None, dest: str | None = None, **extra: str
    ) -> AmiEvent:
        headers: dict[str, str] = {"Timestamp": f"{T0 + t:.6f}"}
        if key:
            headers.update(self.h(key))
        if dest:
            headers.update(self.h(dest, "Dest"))
        headers.update(extra)
        return AmiEvent(pbx="pbx", name=name, headers=headers, received_at=T0 + t)


def inbound_start(p: Pbx) -> list[AmiEvent]:
    p.chan(
        "T", "PJSIP/trunk-00000001", "pbx-1.1", "pbx-1.1", "from-trunk", "74951110000", "89161234567", "Ivan"
    )
    p.chan("A", "PJSIP/101-00000002", "pbx-1.2", "pbx-1.1", "from-internal", "101")
    return [p.ev("Newchannel", 0, "T"), p.ev("Newchannel", 0.1, "A"), p.ev("DialBegin", 0.2, "T", "A")]


def run(events: list[AmiEvent], tracker: CallTracker | None = None) -> list[CallChange]:
    tracker = tracker or CallTracker(SETTINGS)
    out: list[CallChange] = []
    for e in events:
        out += tracker.feed(e)
    return out


def test_answered_inbound_call() -> None:
    p = Pbx()
    events = [
        *inbound_start(p),
        p.ev("DialEnd", 2.2, "T", "A", DialStatus="ANSWER"),
        p.ev("BridgeEnter", 2.3, "A", BridgeUniqueid="b1"),
        p.ev("BridgeEnter", 2.3, "T", BridgeUniqueid="b1"),
        p.ev("Hangup", 8, "A", Cause="16"),
        p.ev("Hangup", 8.1, "T", Cause="16"),
    ]
    changes = run(events)
    assert [c.kind for c in changes] == ["started", "ringing", "answered", "ended"]
    rec = changes[-1].record
    assert (rec.direction, rec.customer_number, rec.customer_name, rec.did) == (
        "inbound",
        "+79161234567",
        "Ivan",
        "+74951110000",
    )
    assert rec.status == "answered" and rec.operator == "101" and not rec.missed
    assert rec.wait_seconds == 2.2 and rec.talk_seconds == 5.9


def test_blind_transfer_is_one_call_with_operators_in_order() -> None:
    p = Pbx()
    events = [
        *inbound_start(p),
        p.ev("DialEnd", 2, "T", "A", DialStatus="ANSWER"),
        p.ev("BridgeEnter", 2, "A", BridgeUniqueid="b1"),
        p.ev("BridgeEnter", 2, "T", BridgeUniqueid="b1"),
    ]
    p.chan("B", "PJSIP/102-00000003", "pbx-1.3", "pbx-1.1", "from-internal", "102")
    bt = {
        **p.h("A", "Transferer"),
        **p.h("T", "Transferee"),
        "Extension": "102",
        "Context": "from-internal",
        "Result": "Success",
        "IsExternal": "No",
    }
    events += [
        AmiEvent("pbx", "BlindTransfer", {"Timestamp": f"{T0 + 5}", **bt}),
        p.ev("Hangup", 5.1, "A", Cause="16"),
        p.ev("Newchannel", 5.2, "B"),
        p.ev("DialBegin", 5.2, "T", "B"),
        p.ev("DialEnd", 7, "T", "B", DialStatus="ANSWER"),
        p.ev("Hangup", 10, "B"),
        p.ev("Hangup", 10, "T"),
    ]
    changes = run(events)
    kinds = [c.kind for c in changes]
    assert kinds.count("ended") == 1 and kinds.count("answered") == 1
    assert ("transferred", "102") in [(c.kind, c.extension) for c in changes]
    rec = ended(changes)[0]
    assert rec.operators_rung == ["101", "102"] and rec.operator == "102"
    assert [(t.kind, t.from_operator, t.to_operator) for t in rec.transfers] == [("blind", "101", "102")]
    assert rec.status == "answered" and rec.wait_seconds == 2.0


def test_a_redirect_of_the_customer_to_another_operator_is_a_blind_transfer() -> None:
    """AMI Redirect (or the dialplan) sends the customer on: no BlindTransfer event, but the
    customer's channel dials 102, who answers: the call went from 101 to 102."""
    p = Pbx()
    p.chan("B", "PJSIP/102-00000005", "pbx-1.5", "pbx-1.1", "from-internal", "102")
    events = [
        *inbound_start(p),
        p.ev("DialEnd", 2, "T", "A", DialStatus="ANSWER"),
        p.ev("BridgeEnter", 2, "A", BridgeUniqueid="b1"),
        p.ev("BridgeEnter", 2, "T", BridgeUniqueid="b1"),
        p.ev("BridgeLeave", 6, "T", BridgeUniqueid="b1"),
        p.ev("Hangup", 6.1, "A"),
        p.ev("Newchannel", 6.2, "B"),
        p.ev("DialBegin", 6.2, "T", "B"),
        p.ev("DialEnd", 8, "T", "B", DialStatus="ANSWER"),
        p.ev("Hangup", 12, "B"),
        p.ev("Hangup", 12.1, "T"),
    ]
    changes = run(events)
    rec = ended(changes)[0]
    assert rec.operator == "102" and rec.operators_rung == ["101", "102"]
    assert [(t.kind, t.from_operator, t.to_operator) for t in rec.transfers] == [("blind", "101", "102")]
    assert ("transferred", "102") in [(c.kind, c.extension) for c in changes]
    assert [c.kind for c in changes].count("answered") == 1


def _attended(p: Pbx, with_event: bool) -> list[AmiEvent]:
    events = [
        *inbound_start(p),
        p.ev("DialEnd", 2, "T", "A", DialStatus="ANSWER"),
        p.ev("BridgeEnter", 2, "A", BridgeUniqueid="b1"),
        p.ev("BridgeEnter", 2, "T", BridgeUniqueid="b1"),
    ]
    # 101 consults 102 on a second line: a call of its own until the transfer joins them.
    p.chan("A2", "PJSIP/101-00000004", "pbx-1.4", "pbx-1.4", "from-internal", "102", "101")
    p.chan("B", "PJSIP/102-00000005", "pbx-1.5", "pbx-1.4", "from-internal", "102")
    events += [
        p.ev("Newchannel", 4, "A2"),
        p.ev("Newchannel", 4.1, "B"),
        p.ev("DialBegin", 4.1, "A2", "B"),
        p.ev("DialEnd", 5, "A2", "B", DialStatus="ANSWER"),
        p.ev("BridgeEnter", 5, "A2", BridgeUniqueid="b2"),
        p.ev("BridgeEnter", 5, "B", BridgeUniqueid="b2"),
    ]
    if with_event:
        at = {
            **p.h("A", "OrigTransferer"),
            **p.h("A2", "SecondTransferer"),
            **p.h("T", "Transferee"),
            **p.h("B", "TransferTarget"),
            "Result": "Success",
            "DestType": "Bridge",
            "Timestamp": f"{T0 + 7}",
        }
        events.append(AmiEvent("pbx", "AttendedTransfer", at))
    events += [p.ev("Hangup", 7.1, "A"), p.ev("Hangup", 7.1, "A2")]
    p.ch["B"]["linkedid"] = "pbx-1.1"  # bridged with the customer: the oldest Linkedid wins
    events += [
        p.ev("BridgeEnter", 7.2, "B", BridgeUniqueid="b1"),
        p.ev("Hangup", 12, "B"),
        p.ev("Hangup", 12.1, "T"),
    ]
    return events


def test_attended_transfer_merges_the_consultation_call() -> None:
    changes = run(_attended(Pbx(), with_event=True))
    records = ended(changes)
    assert len(records) == 1
    rec = records[0]
    assert rec.linkedid == "pbx-1.1" and rec.operator == "102"
    assert rec.operators_rung == ["101", "102"]
    assert [(t.kind, t.from_operator, t.to_operator) for t in rec.transfers] == [("attended", "101", "102")]
    assert abs((rec.ended_at or 0) - (T0 + 12.1)) < 1e-6
    merged = [c.record for c in changes if c.record.merged_into]
    assert merged and merged[-1].linkedid == "pbx-1.4" and merged[-1].merged_into == "pbx-1.1"
    assert not any(c.kind == "ended" and c.record.linkedid == "pbx-1.4" for c in changes)
    # The customer's call stays one call: its legs include the target's.
    assert {leg.extension for leg in rec.legs if leg.role == "operator"} == {"101", "102"}


def test_linkedid_change_alone_merges_the_calls() -> None:
    changes = run(_attended(Pbx(), with_event=False))
    records = ended(changes)
    assert [r.linkedid for r in records] == ["pbx-1.1"]
    assert "102" in records[0].operators_rung


def test_pickup_by_another_operator() -> None:
    p = Pbx()
    events = inbound_start(p)
    p.chan("P", "PJSIP/102-00000006", "pbx-1.6", "pbx-1.6", "from-internal", "*8", "102")
    pickup = {"Timestamp": f"{T0 + 3}", **p.h("P"), **p.h("A", "Target")}
    events += [
        p.ev("Newchannel", 2.5, "P"),
        AmiEvent("pbx", "Pickup", pickup),
        p.ev("DialEnd", 3.01, "T", "A", DialStatus="ANSWER"),
        p.ev("Hangup", 3.02, "A"),
    ]
    p.ch["P"]["linkedid"] = "pbx-1.1"
    events += [
        p.ev("BridgeEnter", 3.1, "P", BridgeUniqueid="b9"),
        p.ev("Hangup", 9, "P"),
        p.ev("Hangup", 9, "T"),
    ]
    changes = run(events)
    records = ended(changes)
    assert len(records) == 1
    rec = records[0]
    assert rec.status == "answered" and rec.operator == "102" and rec.wait_seconds == 3.0
    assert [(t.kind, t.from_operator, t.to_operator) for t in rec.transfers] == [("pickup", "101", "102")]
    assert [c.kind for c in changes].count("answered") == 1


def _unanswered(p: Pbx, status: str) -> list[AmiEvent]:
    return [
        *inbound_start(p),
        p.ev("DialEnd", 5, "T", "A", DialStatus=status),
        p.ev("Hangup", 5.1, "A"),
        p.ev("Hangup", 5.2, "T"),
    ]


def test_outcomes_of_unanswered_calls() -> None:
    outcomes = {
        "NOANSWER": "no_answer",
        "BUSY": "busy",
        "CANCEL": "abandoned",
        "CHANUNAVAIL": "failed",
        "CONGESTION": "failed",
    }
    for dial_status, status in outcomes.items():
        rec = ended(run(_unanswered(Pbx(), dial_status)))[0]
        assert rec.status == status, dial_status
        assert rec.missed and rec.answered_at is None and rec.talk_seconds == 0.0
        assert rec.wait_seconds == 5.2


def test_queue_abandon_and_queue_timeout() -> None:
    p = Pbx()
    start = inbound_start(p)
    join = [p.ev("QueueCallerJoin", 0.1, "T", Queue="support")]
    events = (
        start[:2]
        + join
        + [
            p.ev("AgentCalled", 0.2, "T", "A", Queue="support"),
            p.ev("DialBegin", 0.2, "T", "A"),
            p.ev("DialEnd", 6, "T", "A", DialStatus="CANCEL"),
            p.ev("QueueCallerAbandon", 6, "T", Queue="support"),
            p.ev("Hangup", 6.1, "A"),
            p.ev("Hangup", 6.1, "T"),
        ]
    )
    changes = run(events)
    rec = ended(changes)[0]
    assert rec.status == "abandoned" and rec.queue == "support" and rec.missed
    assert [c.extension for c in changes if c.kind == "ringing"] == [
        "101"
    ]  # AgentCalled + DialBegin: one ring
    p2 = Pbx()
    events = [
        *inbound_start(p2)[:2],
        p2.ev("QueueCallerJoin", 0.1, "T", Queue="support"),
        p2.ev("QueueCallerLeave", 30, "T", Queue="support"),
        p2.ev("Hangup", 30.1, "A"),
        p2.ev("Hangup", 31, "T"),
    ]
    assert ended(run(events))[0].status == "no_answer"


def test_ringing_again_after_a_ring_ended_is_a_new_ring() -> None:
    p = Pbx()
    events = [
        *inbound_start(p),
        p.ev("DialEnd", 5, "T", "A", DialStatus="NOANSWER"),
        p.ev("Hangup", 5.1, "A"),
    ]
    p.chan("A3", "PJSIP/101-00000007", "pbx-1.7", "pbx-1.1", "from-internal", "101")
    events += [
        p.ev("Newchannel", 6, "A3"),
        p.ev("DialBegin", 6, "T", "A3"),
        p.ev("DialBegin", 6, "T", "A3"),  # duplicate
        p.ev("DialEnd", 9, "T", "A3", DialStatus="ANSWER"),
        p.ev("Hangup", 12, "A3"),
        p.ev("Hangup", 12, "T"),
    ]
    changes = run(events)
    assert [c.extension for c in changes if c.kind == "ringing"] == ["101", "101"]
    rec = ended(changes)[0]
    assert rec.operators_rung == ["101"] and rec.status == "answered"


def test_late_events_never_resurrect_an_ended_call() -> None:
    p = Pbx()
    events = _unanswered(p, "NOANSWER")
    tracker = CallTracker(SETTINGS)
    first = run(events, tracker)
    assert [c.kind for c in first].count("ended") == 1
    late = run([*events, p.ev("CEL", 6, EventName="LINKEDID_END", LinkedID="pbx-1.1")], tracker)
    assert late == [] and tracker.live_calls() == []


def test_cel_linkedid_end_ends_the_call() -> None:
    p = Pbx()
    events = [
        *inbound_start(p),
        p.ev("DialEnd", 5, "T", "A", DialStatus="NOANSWER"),
        p.ev("CEL", 5.5, EventName="LINKEDID_END", LinkedID="pbx-1.1"),
    ]
    tracker = CallTracker(SETTINGS)
    rec = ended(run(events, tracker))[0]
    assert rec.ended_at == T0 + 5.5 and rec.status == "no_answer"
    assert all(leg.hungup_at == T0 + 5.5 for leg in rec.legs)
    assert run([p.ev("Hangup", 5.6, "A"), p.ev("Hangup", 5.6, "T")], tracker) == []


def test_click_to_call_whose_operator_never_answers_is_no_answer() -> None:
    p = Pbx()
    p.chan("O", "PJSIP/101-00000008", "c2c-1", "c2c-1", "from-internal", "s")
    events = [
        p.ev("Newchannel", 0, "O"),
        AmiEvent("pbx", "DialBegin", {"Timestamp": f"{T0}", **p.h("O", "Dest")}),
        AmiEvent("pbx", "DialEnd", {"Timestamp": f"{T0 + 20}", **p.h("O", "Dest"), "DialStatus": "NOANSWER"}),
        p.ev("OriginateResponse", 20, "O", Response="Failure", Reason="3"),
        p.ev("Hangup", 20.1, "O"),
    ]
    rec = ended(run(events))[0]
    assert rec.status == "no_answer" and rec.operators_rung == ["101"] and not rec.missed


def test_an_originate_that_found_the_operator_busy_or_no_channel() -> None:
    for reason, dial_status, status in (("5", "BUSY", "busy"), ("0", "CHANUNAVAIL", "failed"),
                                        ("8", None, "failed")):
        p = Pbx()
        p.chan("O", "PJSIP/101-00000008", "c2c-2", "c2c-2", "from-internal", "s")
        events = [p.ev("Newchannel", 0, "O"),
                  AmiEvent("pbx", "DialBegin", {"Timestamp": f"{T0}", **p.h("O", "Dest")})]
        if dial_status:
            events.append(AmiEvent("pbx", "DialEnd", {"Timestamp": f"{T0 + 1}", **p.h("O", "Dest"),
                                                      "DialStatus": dial_status}))
        events += [p.ev("Hangup", 1.1, "O"),
                   p.ev("OriginateResponse", 1.2, "O", Response="Failure", Reason=reason)]
        assert ended(run(events))[0].status == status, reason


def _originate_unanswered(p: Pbx, uid: str) -> list[AmiEvent]:
    """Another AMI client (a CRM's own, FreePBX's click-to-call) Originates PJSIP/101 ->
    from-internal,89161234567; 101 never picks up. As Asterisk 22 reports it: the first party's
    Dial without a caller, its Hangup, then the OriginateResponse."""
    p.chan("O", "PJSIP/101-00000008", uid, uid, "from-internal", "s")
    return [
        p.ev("Newchannel", 0, "O"),
        AmiEvent("pbx", "DialBegin", {"Timestamp": f"{T0}", **p.h("O", "Dest")}),
        AmiEvent("pbx", "DialEnd", {"Timestamp": f"{T0 + 20}", **p.h("O", "Dest"), "DialStatus": "NOANSWER"}),
        p.ev("Hangup", 20.01, "O", Cause="19", **{"Cause-txt": "User alerting, no answer"}),
    ]


def _originate_response(channel: str, uniqueid: str, t: float = 20.02) -> AmiEvent:
    return AmiEvent("pbx", "OriginateResponse", {
        "Timestamp": f"{T0 + t}", "ActionID": "crm-42", "Response": "Failure", "Channel": channel,
        "Context": "from-internal", "Exten": "89161234567", "Reason": "3", "Uniqueid": uniqueid,
        "CallerIDNum": "<unknown>", "CallerIDName": "<unknown>"})


def test_an_originate_by_another_ami_client_that_the_operator_never_answers() -> None:
    """Without a ChannelId Asterisk names the dial string and no Uniqueid: still the outbound
    call our own click-to-call would have made, to the number, failed."""
    p = Pbx()
    tracker = CallTracker(SETTINGS)
    before = run(_originate_unanswered(p, "pbx-9.1"), tracker)
    assert not any(c.kind == "ended" for c in before)  # waits for the OriginateResponse
    changes = before + run([_originate_response("PJSIP/101", "<null>")], tracker)
    rec = ended(changes)[0]
    assert (rec.direction, rec.customer_number, rec.dialled) == ("outbound", "+79161234567", "89161234567")
    assert rec.operators_rung == ["101"] and rec.operator == "101"
    assert rec.status == "no_answer" and not rec.missed  # the operator's phone rang out
    assert rec.ended_at == T0 + 20.01  # when its last channel hung up, not when Asterisk told
    assert rec.legs[0].hangup_cause == "User alerting, no answer"
    assert tracker.live_calls() == []


def test_an_originate_with_a_channel_id_is_matched_by_its_uniqueid() -> None:
    p = Pbx()
    rec = ended(run([*_originate_unanswered(p, "c2c-7"), _originate_response("PJSIP/101", "c2c-7")]))[0]
    assert rec.direction == "outbound" and rec.customer_number == "+79161234567"
    assert rec.linkedid == "c2c-7" and rec.status == "no_answer"


def test_an_originate_whose_response_never_comes_still_ends() -> None:
    p = Pbx()
    tracker = CallTracker(SETTINGS)
    assert not ended(run(_originate_unanswered(p, "pbx-9.2"), tracker))
    assert tracker.has_pending_ends
    # The PBX goes quiet: the pipeline flushes it...
    rec = ended(tracker.flush_pending_ends())[0]
    assert rec.ended_at == T0 + 20.01 and rec.operators_rung == ["101"]
    assert not tracker.has_pending_ends and tracker.live_calls() == []
    # ... or any event of another call a few seconds later does.
    p2 = Pbx()
    tracker = CallTracker(SETTINGS)
    run(_originate_unanswered(p2, "pbx-9.3"), tracker)
    later = run([*inbound_start(Pbx())][:1], tracker)
    assert not ended(later)
    p3 = Pbx()
    p3.chan("T", "PJSIP/trunk-00000009", "pbx-9.9", "pbx-9.9", "from-trunk", "74951110000", "8916", "")
    assert ended(run([p3.ev("Newchannel", 25, "T")], tracker))[0].linkedid == "pbx-9.3"


# --- restarts and reconnects -----------------------------------------------------------------


def test_restore_then_snapshot_without_the_call_ends_it_during_the_outage() -> None:
    live = CallRecord(
        pbx="pbx",
        linkedid="pbx-9.1",
        started_at=T0,
        direction="inbound",
        customer_number="+79161234567",
        did="+74951110000",
        operator="101",
        operators_rung=["101"],
        answered_at=T0 + 2,
        id=7,
        legs=[
            Leg("pbx-9.1", "PJSIP/trunk-00000009", "customer", None, T0),
            Leg("pbx-9.2", "PJSIP/101-0000000a", "operator", "101", T0 + 0.5, T0 + 2),
        ],
    )
    tracker = CallTracker(SETTINGS)
    tracker.restore([live])
    assert [r.linkedid for r in tracker.live_calls()] == ["pbx-9.1"]
    changes = tracker.resync(ChannelsSnapshot(pbx="pbx", at=T0 + 100, channels=[]))
    assert [c.kind for c in changes] == ["ended"]
    rec = changes[0].record
    assert rec.ended_during_outage and rec.id == 7 and rec.status == "answered"
    assert rec.ended_at == T0 + 2  # the last time we knew anything of it
    assert (rec.customer_number, rec.did, rec.operator) == ("+79161234567", "+74951110000", "101")
    assert tracker.live_calls() == []


def test_restore_then_snapshot_with_the_call_keeps_following_it() -> None:
    live = CallRecord(
        pbx="pbx",
        linkedid="pbx-1.1",
        started_at=T0,
        direction="inbound",
        customer_number="+79161234567",
        customer_name="Ivan",
        did="+74951110000",
        operators_rung=["101"],
        operator="101",
        answered_at=T0 + 2,
        legs=[
            Leg("pbx-1.1", "PJSIP/trunk-00000001", "customer", None, T0),
            Leg("pbx-1.2", "PJSIP/101-00000002", "operator", "101", T0, T0 + 2),
        ],
    )
    tracker = CallTracker(SETTINGS)
    tracker.restore([live])
    p = Pbx()
    inbound_start(p)
    shown = [
        AmiEvent(
            "pbx",
            "CoreShowChannel",
            {**p.h(k), "ChannelState": "6", "BridgeId": "b1", "Duration": "00:00:30"},
        )
        for k in ("T", "A")
    ]
    assert tracker.resync(ChannelsSnapshot(pbx="pbx", at=T0 + 30, channels=shown)) == []
    changes = run([p.ev("Hangup", 40, "A"), p.ev("Hangup", 40, "T")], tracker)
    assert [c.kind for c in changes] == ["ended"]
    rec = changes[0].record
    assert rec.ended_at == T0 + 40 and not rec.ended_during_outage and rec.status == "answered"


def test_snapshot_ends_only_the_calls_that_are_gone(traces: Path) -> None:
    tracker = CallTracker(trace_settings("lab"))
    items = [i for i in load_items(traces, "inbound_answered") if isinstance(i, AmiEvent)]
    cut = next(k for k, e in enumerate(items) if e.name == "BridgeEnter")
    feed_all(tracker, items[:cut])
    changes = tracker.resync(ChannelsSnapshot(pbx="lab", at=items[cut].timestamp + 60, channels=[]))
    rec = ended(changes)[0]
    assert rec.ended_during_outage and rec.status == "answered"
    # The last time we knew anything of it (its last event before the cut).
    assert abs((rec.ended_at or 0) - max(e.timestamp for e in items[:cut])) < 0.01
    assert feed_all(tracker, items[cut:]) == []  # the rest of it is late: no second record


# --- junk ----------------------------------------------------------------------------------

NAMES = [
    "Newchannel",
    "Newstate",
    "NewCallerid",
    "Newexten",
    "VarSet",
    "DialBegin",
    "DialEnd",
    "BridgeEnter",
    "BridgeLeave",
    "Hangup",
    "CEL",
    "QueueCallerJoin",
    "QueueCallerAbandon",
    "QueueCallerLeave",
    "AgentCalled",
    "AgentConnect",
    "BlindTransfer",
    "AttendedTransfer",
    "Pickup",
    "OriginateResponse",
    "CoreShowChannel",
    "Cdr",
    "Bogus",
]


def _with_junk(traces: Path, junk: list[AmiEvent]) -> None:
    """The junk, spread through a real call, changes nothing of it."""
    items = load_items(traces, "queue_ringall_answered")
    mixed: list[object] = []
    step = max(1, len(items) // max(1, len(junk)))
    j = iter(junk)
    for k, item in enumerate(items):
        mixed.append(item)
        if k % step == 0:
            mixed.extend(next(j, None) for _ in range(1))
    mixed = [m for m in mixed if m is not None] + list(j)
    tracker = CallTracker(trace_settings("lab"))
    changes = feed_all(tracker, mixed)  # type: ignore[arg-type]
    records = [r for r in ended(changes) if r.linkedid == "c215561d-b379-44bd-a3e4-3187d26682a9"]
    assert len(records) == 1
    check_record(records[0], EXPECTED["queue_ringall_answered"])


def test_missing_headers_and_unknown_channels(traces: Path) -> None:
    junk = [AmiEvent("lab", n, {}) for n in NAMES]
    junk += [AmiEvent("lab", n, {"Uniqueid": "nope", "Channel": "PJSIP/1-1"}) for n in NAMES]
    junk += [AmiEvent("lab", n, {"Linkedid": "only-linkedid", "DestUniqueid": "x"}) for n in NAMES]
    _with_junk(traces, junk)


def test_hangup_before_its_newchannel_leaves_no_live_call() -> None:
    p = Pbx()
    p.chan("X", "PJSIP/trunk-0000000b", "pbx-5.1", "pbx-5.1", "from-trunk", "74951110000", "89161234567")
    tracker = CallTracker(SETTINGS)
    assert (
        run([p.ev("Hangup", 1, "X"), p.ev("Newchannel", 0.5, "X"), p.ev("Newstate", 0.6, "X")], tracker) == []
    )
    assert tracker.live_calls() == []


def test_bad_timestamps_do_not_move_times(traces: Path) -> None:
    junk = [
        AmiEvent(
            "lab",
            "Newstate",
            {
                "Timestamp": t,
                "Uniqueid": f"j{i}",
                "Linkedid": f"j{i}",
                "Channel": "PJSIP/trunk-1",
                "ChannelState": "6",
            },
        )
        for i, t in enumerate(["abc", "nan", "inf", "-5", "", "1e400", "0"])
    ]
    _with_junk(traces, junk)
    # And on the call's own channel: the bad time is ignored, the call keeps its times.
    p = Pbx()
    events = inbound_start(p)
    events.append(AmiEvent("pbx", "Newstate", {**p.h("T"), "Timestamp": "nan", "ChannelState": "6"}))
    events += [
        p.ev("DialEnd", 2, "T", "A", DialStatus="ANSWER"),
        p.ev("Hangup", 3, "A"),
        p.ev("Hangup", 3, "T"),
    ]
    rec = ended(run(events))[0]
    assert rec.started_at == T0 and rec.ended_at == T0 + 3 and rec.wait_seconds == 2.0


def test_megabyte_header_values(traces: Path) -> None:
    big = "9" * 1_000_000
    junk = [
        AmiEvent(
            "lab",
            n,
            {
                "Uniqueid": big,
                "Linkedid": big,
                "Channel": big,
                "CallerIDNum": big,
                "Context": big,
                "Exten": big,
                "DestUniqueid": big,
                "Timestamp": big,
            },
        )
        for n in NAMES
    ]
    junk += [
        AmiEvent(
            "lab",
            "Newchannel",
            {
                "Uniqueid": "ok-1",
                "Linkedid": "ok-1",
                "Channel": big,
                "CallerIDNum": big,
                "CallerIDName": big,
                "Exten": big,
                "Context": "from-trunk",
            },
            variables={"CALL_ID": big, "DIRECTION": big},
        )
    ]
    _with_junk(traces, junk)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(NAMES),
            st.dictionaries(
                st.sampled_from(
                    [
                        "Uniqueid",
                        "Linkedid",
                        "Channel",
                        "DestUniqueid",
                        "DestLinkedid",
                        "DestChannel",
                        "DialStatus",
                        "ChannelState",
                        "Context",
                        "Exten",
                        "BridgeUniqueid",
                        "EventName",
                        "LinkedID",
                        "Timestamp",
                        "TargetUniqueid",
                        "TransfereeUniqueid",
                        "Result",
                        "Response",
                    ]
                ),
                st.sampled_from(
                    [
                        "",
                        "a",
                        "b",
                        "PJSIP/101-1",
                        "from-trunk",
                        "ANSWER",
                        "6",
                        "LINKEDID_END",
                        "Success",
                        "Failure",
                        "1.5",
                        "x;2",
                        "Local/1@a-1;1",
                        "74951110000",
                    ]
                ),
            ),
            st.dictionaries(st.sampled_from(["DIRECTION", "CALL_ID"]), st.sampled_from(["", "inbound", "x"])),
        ),
        max_size=40,
    )
)
def test_random_junk_never_raises_nor_touches_a_real_call(
    junk: list[tuple[str, dict[str, str], dict[str, str]]],
) -> None:
    from tests.conftest import TRACES

    _with_junk(TRACES, [AmiEvent("lab", n, h, v) for n, h, v in junk])


def test_same_record_when_fed_through_a_fresh_tracker_twice(traces: Path) -> None:
    items = load_items(traces, "click_to_call")
    a = ended(feed_all(CallTracker(trace_settings("lab")), items))[0]
    b = ended(feed_all(CallTracker(trace_settings("lab")), items))[0]
    assert close(summary(a), summary(b)) and a.to_dict() == b.to_dict()


def test_restored_local_pair_stays_one_leg(traces: Path) -> None:
    """A restart mid-call on the lab PBX: the snapshot's ;2 halves join their restored legs."""
    items = load_items(traces, "queue_ringall_answered")
    snap_at = next(k for k, i in enumerate(items) if isinstance(i, ChannelsSnapshot))
    before = CallTracker(trace_settings("lab"))
    feed_all(before, items[:snap_at])
    (live,) = before.live_calls()
    after = CallTracker(trace_settings("lab"))
    after.restore([live])
    changes = feed_all(after, items[snap_at:])
    (rec,) = ended(changes)
    check_record(rec, EXPECTED["queue_ringall_answered"])
    assert len(rec.legs) == len(live.legs) == 3


def test_outbound_through_a_dialplan_macro_takes_the_number_from_the_dialled_channel() -> None:
    """FreePBX dials trunks from macro-dialout-trunk, whose Exten is `s`; the trunk channel's
    caller ID is the number dialled."""
    p = Pbx()
    p.chan("O", "PJSIP/101-00000010", "pbx-7.1", "pbx-7.1", "macro-dialout-trunk", "s", "101")
    p.chan("K", "PJSIP/trunk-00000011", "pbx-7.2", "pbx-7.1", "from-trunk", "", "84951234567")
    events = [
        p.ev("Newchannel", 0, "O"),
        p.ev("Newchannel", 0.2, "K"),
        p.ev("DialBegin", 0.2, "O", "K"),
        p.ev("DialEnd", 3, "O", "K", DialStatus="ANSWER"),
        p.ev("Hangup", 9, "K"),
        p.ev("Hangup", 9, "O"),
    ]
    rec = ended(run(events))[0]
    assert (rec.direction, rec.dialled, rec.customer_number, rec.operator) == (
        "outbound",
        "84951234567",
        "+74951234567",
        "101",
    )
    assert rec.status == "answered" and rec.wait_seconds == 3.0 and rec.talk_seconds == 6.0
    assert [leg.role for leg in rec.legs] == ["operator", "customer"]


def test_outbound_leg_in_an_inbound_context_does_not_make_it_inbound() -> None:
    """On a SIP trunk the outbound leg runs in `from-trunk` too: the call started at 101."""
    p = Pbx()
    p.chan("O", "PJSIP/101-00000012", "pbx-8.1", "pbx-8.1", "from-internal", "89161234567", "101")
    p.chan("K", "PJSIP/trunk-00000013", "pbx-8.2", "pbx-8.1", "from-trunk", "89161234567", "89161234567")
    events = [
        p.ev("Newchannel", 0, "O"),
        p.ev("Newchannel", 0.1, "K"),
        p.ev("DialBegin", 0.1, "O", "K"),
        p.ev("DialEnd", 10, "O", "K", DialStatus="NOANSWER"),
        p.ev("Hangup", 10, "K"),
        p.ev("Hangup", 10.1, "O"),
    ]
    rec = ended(run(events))[0]
    assert (rec.direction, rec.customer_number, rec.did, rec.status, rec.missed) == (
        "outbound",
        "+79161234567",
        None,
        "no_answer",
        False,
    )
