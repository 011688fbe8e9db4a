"""Shared by the tracker tests: the README's expectations per trace, feeding traces, and a model
of Asterisk's channel table to build the CoreShowChannels answer at any point of a trace."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pbx_bridge.ami.events import AmiEvent, ChannelsSnapshot
from pbx_bridge.calls.changes import CallChange
from pbx_bridge.calls.queue import QueueItem
from pbx_bridge.calls.record import CallRecord
from pbx_bridge.calls.replay import trace_items
from pbx_bridge.calls.tracker import CallTracker, TrackerSettings
from pbx_bridge.simulator.trace import read_trace

LAB_OPERATORS = r"^Local/(?P<ext>1\d\d)@(operators|op-phone)-"
SIP_OPERATORS = r"^(?:PJSIP|SIP)/(?P<ext>\d{2,5})-"


def settings_for(trace: str, pbx: str = "lab") -> TrackerSettings:
    pattern = SIP_OPERATORS if trace.startswith("sip_") else LAB_OPERATORS
    return TrackerSettings(
        pbx=pbx, operator_channel=re.compile(pattern), inbound_contexts=frozenset({"from-trunk"})
    )


@dataclass(frozen=True)
class Expected:
    direction: str
    number: str | None
    name: str | None
    did: str | None
    dialled: str | None
    rung: tuple[str, ...]
    operator: str | None
    status: str
    wait: float | None
    talk: float | None
    queue: str | None = None
    click_to_call_id: str | None = None
    # (kind, from_operator, to_operator) of each transfer, in order.
    transfers: tuple[tuple[str, str | None, str | None], ...] = ()


# The table in shared/ami-traces/README.md. Operators rung include the operator's own phone
# when the PBX rang it first (Originate: click-to-call, and the lab's outbound/internal calls).
EXPECTED: dict[str, Expected] = {
    "inbound_answered": Expected(
        "inbound", "+74951234567", "Ivan Petrov", "+74951110000", None, ("101",), "101", "answered", 2.0, 4.9
    ),
    "inbound_answered_recorded": Expected(
        "inbound", "+74951234567", "Ivan Petrov", "+74951110000", None, ("101",), "101", "answered", 2.0, 3.9
    ),
    "inbound_noanswer": Expected(
        "inbound", "+79161234567", None, "+74951112222", None, ("102",), None, "no_answer", 4.0, 0.0
    ),
    "inbound_busy": Expected(
        "inbound", "+79161112233", None, "+74951110000", None, ("101",), None, "busy", 0.0, 0.0
    ),
    "queue_ringall_answered": Expected(
        "inbound",
        "+74957654321",
        "Olga",
        "+74951113333",
        None,
        ("101", "102"),
        "102",
        "answered",
        3.0,
        4.9,
        queue="sales",
    ),
    "outbound_answered": Expected(
        "outbound", "+74959876543", None, None, "84959876543", ("101",), "101", "answered", 2.0, 6.0
    ),
    "click_to_call": Expected(
        "outbound",
        "+79035550199",
        None,
        None,
        "89035550199",
        ("101",),
        "101",
        "answered",
        2.0,
        6.0,
        click_to_call_id="c2c-demo-1",
    ),
    "internal_call": Expected(
        "internal", None, None, None, "102", ("101", "102"), "102", "answered", 2.0, 4.0
    ),
    "resync_mid_call": Expected(
        "inbound",
        "+74991234567",
        "Anna Sidorova",
        "+74951110000",
        None,
        ("101",),
        "101",
        "answered",
        None,
        None,
    ),
    "sip_inbound_answered_recorded": Expected(
        "inbound", "+74951234567", "Ivan Petrov", "+74951110000", None, ("101",), "101", "answered", 2.0, 4.9
    ),
    # The SIP traces captured with their CEL rows (shared/ami-traces/cel/).
    "sip_inbound_answered_cel": Expected(
        "inbound", "+74951234567", "Ivan Petrov", "+74951110000", None, ("101",), "101", "answered", 2.0, 4.9
    ),
    "sip_queue_ringall_cel": Expected(
        "inbound", "+74957654321", "Olga", "+74951113333", None, ("101", "102"), "102", "answered", 3.0, 4.9,
        queue="sales",
    ),
    "sip_outbound_busy_cel": Expected(
        "outbound", "+79165550101", None, None, "89165550101", ("102",), "102", "busy", 1.0, 0.0,
        click_to_call_id="160eeb3d-184c-4b7d-8318-3b1ef6907553",
    ),
    "sip_attended_transfer": Expected(
        "inbound", "+74951239999", "Anna", "+74951110000", None, ("101", "102"), "102", "answered", 1.0, 11.3,
        transfers=(("attended", "101", "102"),),
    ),
    # 102's phone is rung by the Originate that runs PickupChan (as a BLF key does).
    "sip_pickup": Expected(
        "inbound", "+74951238888", "Boris", "+74951110000", None, ("101", "102"), "102", "answered",
        2.05, 5.9, transfers=(("pickup", "101", "102"),),
    ),
    "sip_internal_call": Expected(
        "internal", None, None, None, "102", ("101", "102"), "102", "answered", 3.0, 3.9,
        click_to_call_id="0542c81c-66d6-4d12-9c25-51a796e65aed",
    ),
}


def check_record(rec: CallRecord, exp: Expected) -> None:
    assert rec.direction == exp.direction
    assert rec.customer_number == exp.number
    assert rec.customer_name == exp.name
    assert rec.did == exp.did
    assert rec.dialled == exp.dialled
    assert tuple(rec.operators_rung) == exp.rung
    assert rec.operator == exp.operator
    assert rec.status == exp.status
    assert rec.missed == (exp.direction == "inbound" and exp.status != "answered")
    assert rec.queue == exp.queue
    assert rec.click_to_call_id == exp.click_to_call_id
    assert tuple((t.kind, t.from_operator, t.to_operator) for t in rec.transfers) == exp.transfers
    if exp.wait is not None:
        assert rec.wait_seconds is not None and abs(rec.wait_seconds - exp.wait) <= 0.3
    if exp.talk is not None:
        assert rec.talk_seconds is not None and abs(rec.talk_seconds - exp.talk) <= 0.3
    assert rec.ended_at is not None and not rec.live


def load_items(traces: Path, name: str, pbx: str = "lab") -> list[QueueItem]:
    return trace_items(read_trace(traces / f"{name}.ami"), pbx)


def feed_all(tracker: CallTracker, items: list[QueueItem]) -> list[CallChange]:
    changes: list[CallChange] = []
    for item in items:
        if isinstance(item, AmiEvent):
            changes += tracker.feed(item)
        elif isinstance(item, ChannelsSnapshot):
            changes += tracker.resync(item)
    return changes


def ended(changes: list[CallChange]) -> list[CallRecord]:
    return [c.record for c in changes if c.kind == "ended"]


def summary(rec: CallRecord) -> dict[str, Any]:
    """What must not depend on how the events arrived."""
    return {
        "linkedid": rec.linkedid,
        "direction": rec.direction,
        "status": rec.status,
        "number": rec.customer_number,
        "name": rec.customer_name,
        "did": rec.did,
        "dialled": rec.dialled,
        "rung": list(rec.operators_rung),
        "operator": rec.operator,
        "queue": rec.queue,
        "c2c": rec.click_to_call_id,
        "started": round(rec.started_at, 1),
        "answered": rec.answered_at is not None,
        "ended": round(rec.ended_at or 0, 1),
        "outage": rec.ended_during_outage,
    }


def close(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal, times within 0.3 s."""
    for key in a:
        if key in ("started", "ended"):
            if abs(a[key] - b[key]) > 0.3:
                return False
        elif a[key] != b[key]:
            return False
    return True


# --- Asterisk's channel table, to answer CoreShowChannels at any point of a trace ---------

_COPIED = (
    "Channel",
    "ChannelState",
    "ChannelStateDesc",
    "CallerIDNum",
    "CallerIDName",
    "ConnectedLineNum",
    "ConnectedLineName",
    "Language",
    "AccountCode",
    "Context",
    "Exten",
    "Priority",
    "Uniqueid",
    "Linkedid",
)


class ChannelTable:
    def __init__(self) -> None:
        self.channels: dict[str, dict[str, Any]] = {}

    def apply(self, ev: AmiEvent) -> None:
        h = ev.headers
        uid = h.get("Uniqueid")
        if not uid or ev.name in ("CEL", "Cdr", "OriginateResponse", "CoreShowChannel"):
            return
        if ev.name == "Hangup":
            self.channels.pop(uid, None)
            return
        ch = self.channels.get(uid)
        if ch is None:
            if ev.name != "Newchannel":
                return
            ch = self.channels[uid] = {"created": ev.timestamp, "bridge": "", "vars": {}, "headers": {}}
        for key in _COPIED:
            value = h.get(key)
            if value:
                ch["headers"][key] = value
        ch["vars"].update(ev.variables)
        if ev.name == "BridgeEnter":
            ch["bridge"] = h.get("BridgeUniqueid", "")
        elif ev.name == "BridgeLeave":
            ch["bridge"] = ""

    def apply_snapshot(self, snap: ChannelsSnapshot) -> None:
        """What an earlier CoreShowChannels answer showed (the trace joined mid-call)."""
        for ev in snap.channels:
            uid = ev.headers.get("Uniqueid")
            if not uid:
                continue
            h, m, s = (int(x) for x in ev.headers.get("Duration", "0:0:0").split(":"))
            ch = self.channels.setdefault(
                uid, {"created": snap.at - (h * 3600 + m * 60 + s), "bridge": "", "vars": {}, "headers": {}}
            )
            for key in _COPIED:
                if ev.headers.get(key):
                    ch["headers"][key] = ev.headers[key]
            ch["vars"].update(ev.variables)
            ch["bridge"] = ev.headers.get("BridgeId", "")

    def snapshot(self, pbx: str, at: float) -> ChannelsSnapshot:
        events = []
        for ch in self.channels.values():
            seconds = max(0, int(at - ch["created"]))
            headers = dict(ch["headers"])
            headers["BridgeId"] = ch["bridge"]
            headers["Duration"] = f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
            events.append(
                AmiEvent(
                    pbx=pbx,
                    name="CoreShowChannel",
                    headers=headers,
                    variables=dict(ch["vars"]),
                    received_at=at,
                )
            )
        return ChannelsSnapshot(pbx=pbx, at=at, channels=events)


def rewrite_ids(items: list[QueueItem], prefix: str) -> list[QueueItem]:
    """The same call with fresh ids: every Uniqueid/Linkedid header gets the prefix."""
    out: list[QueueItem] = []
    for item in items:
        if isinstance(item, AmiEvent):
            out.append(_rewrite_event(item, prefix))
        elif isinstance(item, ChannelsSnapshot):
            out.append(
                ChannelsSnapshot(item.pbx, item.at, [_rewrite_event(e, prefix) for e in item.channels])
            )
    return out


def _rewrite_event(ev: AmiEvent, prefix: str) -> AmiEvent:
    headers = {
        k: (prefix + v if v and k.lower().endswith(("uniqueid", "linkedid")) else v)
        for k, v in ev.headers.items()
    }
    return AmiEvent(ev.pbx, ev.name, headers, dict(ev.variables), ev.received_at)
