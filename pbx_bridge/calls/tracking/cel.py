"""CEL and the tracker: the live `LINKEDID_END` event that ends a call, and `absorb`, which takes
in the calls pbx_bridge.calls.rebuild made from CEL rows (after an outage, or for a backfill) and
completes or replaces what the AMI events told of them.

Events: CEL (LINKEDID_END only).
"""

from __future__ import annotations

from pbx_bridge.ami.events import AmiEvent
from pbx_bridge.calls.changes import CallChange
from pbx_bridge.calls.record import CallRecord, combine
from pbx_bridge.calls.tracking.channels import merge
from pbx_bridge.calls.tracking.originates import await_originate_response
from pbx_bridge.calls.tracking.reporting import drop, end
from pbx_bridge.calls.tracking.rules import record
from pbx_bridge.calls.tracking.state import Call, TrackerState, remember


def on_cel(st: TrackerState, ev: AmiEvent, ts: float) -> Call | None:
    h = ev.headers
    if h.get("EventName") != "LINKEDID_END":
        return None
    linkedid = h.get("LinkedID") or h.get("Linkedid") or ""
    call = st.calls.get(st.alias.get(linkedid, linkedid))
    if call is None or call.linkedid != linkedid:
        # A merged call's own LINKEDID_END says nothing about the call it joined.
        return None
    if call.ending_at is not None:
        return None  # its OriginateResponse follows (Asterisk sends it after the CEL)
    if not call.live and await_originate_response(st, call, ts):
        return None
    end(st, call, ts)
    return None


def absorb(st: TrackerState, records: list[CallRecord], merged: dict[str, str],
           leave_after: float | None) -> None:
    """See CallTracker.absorb; the changes go to `st.changes`."""
    changes = st.changes
    for linkedid, into in merged.items():
        src = st.calls.get(linkedid)
        if src is None or src.linkedid != linkedid:
            # Not followed here (ended during an outage, or never heard): a row of its own
            # in the log is no call, and goes.
            changes.append(CallChange("updated", CallRecord(
                st.settings.pbx, linkedid, 0.0, merged_into=into)))
            continue
        dst = st.calls.get(st.alias.get(into, into))
        if dst is not None and dst is not src:
            merge(st, src, dst)
            continue
        rec = record(st, src)
        drop(st, src)
        rec.merged_into = into
        changes.append(CallChange("updated", rec))
    for rec in records:
        key = st.alias.get(rec.linkedid, rec.linkedid)
        call = st.calls.get(key)
        if call is not None:
            if (leave_after is not None and call.fixed is None and rec.ended_at is not None
                    and rec.ended_at > leave_after):
                continue
            rec = combine(rec, record(st, call))
            drop(st, call)
        elif key in st.ended and key not in st.outage_ended:
            continue  # the events ended it whole: that record stands
        else:
            known = st.outage_ended.pop(key, None)
            if known is not None:
                rec = combine(rec, known)
            remember(st.ended, key)
        changes.append(CallChange("ended", rec, rec.operator, backfilled=True))
