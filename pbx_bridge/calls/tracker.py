"""AMI events in, one call record per customer call out: the call tracker (pure logic, no I/O).

A call is Asterisk's Linkedid on one PBX. The tracker follows every channel of the call (Local
channel halves `;1`/`;2` count as one leg), and reports what changed as `CallChange`s:
`started` once, `ringing` per operator per ring, `answered` once, `transferred`, `updated` for
changes of the public record, and `ended` exactly once.

`CallTracker` holds one PBX's state and hands each event to its handler; the handlers live in
pbx_bridge.calls.tracking, one module a concern (see docs/call-tracking.md for the rules):

- channels and Local pairs, calls merging, Hangup: tracking/channels.py
- Dials and queues: tracking/dials.py; ringing and the call's answer: tracking/answering.py
- bridges: tracking/bridges.py
- transfers, all of them (blind, attended via Atxfer's Local pair, a Redirect or the dialplan
  handing the call to another operator, pickup): tracking/transfers.py
- Originates and the OriginateResponse: tracking/originates.py
- direction and status rules, the record: tracking/rules.py; what is reported when:
  tracking/reporting.py
- resync after a (re)login and restore after a restart: tracking/resync.py
- CEL: LINKEDID_END and absorbing calls rebuilt from CEL: tracking/cel.py
"""

from __future__ import annotations

from collections.abc import Callable

from pbx_bridge.ami.events import AmiEvent, ChannelsSnapshot
from pbx_bridge.calls.changes import CallChange
from pbx_bridge.calls.record import CallRecord
from pbx_bridge.calls.tracking import (
    bridges,
    cel,
    channels,
    dials,
    originates,
    reporting,
    resync,
    rules,
    transfers,
)
from pbx_bridge.calls.tracking.state import Call, TrackerSettings, TrackerState, valid_ts

__all__ = ["CallTracker", "TrackerSettings"]

Handler = Callable[[TrackerState, AmiEvent, float], Call | None]

# Each handler returns the call it touched (None: nothing to report after it).
_HANDLERS: dict[str, Handler] = {
    "Newchannel": channels.on_channel_event,
    "Newstate": channels.on_newstate,
    "NewCallerid": channels.on_channel_event,
    "Newexten": channels.on_newexten,
    "VarSet": channels.on_varset,
    "Hangup": channels.on_hangup,
    "DialBegin": dials.on_dial_begin,
    "DialEnd": dials.on_dial_end,
    "QueueCallerJoin": dials.on_queue_join,
    "QueueCallerAbandon": dials.on_queue_abandon,
    "QueueCallerLeave": dials.on_queue_leave,
    "AgentCalled": dials.on_agent_called,
    "AgentConnect": dials.on_agent_connect,
    "BridgeEnter": bridges.on_bridge_enter,
    "BridgeLeave": bridges.on_bridge_leave,
    "BlindTransfer": transfers.on_blind_transfer,
    "AttendedTransfer": transfers.on_attended_transfer,
    "Pickup": transfers.on_pickup,
    "OriginateResponse": originates.on_originate_response,
    "CEL": cel.on_cel,
}
_VARSET_NAMES = frozenset({"DIRECTION", "_DIRECTION", "__DIRECTION", "CALL_ID", "_CALL_ID",
                           "__CALL_ID"})


class CallTracker:
    def __init__(self, settings: TrackerSettings) -> None:
        self.settings = settings
        self._st = TrackerState(settings)

    def feed(self, event: AmiEvent) -> list[CallChange]:
        name = event.name
        handler = _HANDLERS.get(name)
        if handler is None:
            return []
        st = self._st
        # The three most frequent events rarely matter: decide before any other work.
        h = event.headers
        if name == "VarSet":
            if h.get("Variable") not in _VARSET_NAMES:
                return []
        elif name == "Newexten":
            ch = st.channels.get(h.get("Uniqueid", ""))
            if ch is None or h.get("Context") == ch.context:
                return []
        elif name == "CEL" and h.get("EventName") != "LINKEDID_END":
            return []
        ts = event.timestamp
        if not valid_ts(ts):
            ts = st.last_ts
        elif ts > st.last_ts:
            st.last_ts = ts
        changes = st.begin()
        if st.pending_ends:
            originates.flush_pending_ends(st, ts)
        try:
            call = handler(st, event, ts)
            if call is not None:
                reporting.after_event(st, call)
        except Exception:
            # Junk we did not foresee: drop the rest of the event. Handlers only ever touch
            # the call the event names, so other calls are unaffected.
            return changes
        return changes

    def resync(self, snapshot: ChannelsSnapshot) -> list[CallChange]:
        """After a (re)login: CoreShowChannels is the truth. Calls not in it ended while we
        were away; calls we did not know are picked up from what the snapshot shows."""
        changes = self._st.begin()
        originates.flush_pending_ends(self._st, None)
        resync.resync(self._st, snapshot)
        return changes

    def restore(self, records: list[CallRecord]) -> None:
        """Calls the database still has live after a restart; the first snapshot then ends the
        ones that are gone and keeps following the others."""
        resync.restore(self._st, records)

    def absorb(self, records: list[CallRecord], merged: dict[str, str], *,
               leave_after: float | None) -> list[CallChange]:
        """Calls rebuilt from CEL (pbx_bridge.calls.rebuild), all of them over. A call still
        live here is ended with CEL's record, completed with what the events told (`ami+cel`),
        unless it ended after `leave_after` (the PBX is connected: its last events may be on
        their way). A call these events ended whole is left alone; one ended during an outage
        is completed. `merged`: Linkedids CEL shows joined another call."""
        changes = self._st.begin()
        cel.absorb(self._st, records, merged, leave_after)
        return changes

    @property
    def has_pending_ends(self) -> bool:
        return bool(self._st.pending_ends)

    def flush_pending_ends(self) -> list[CallChange]:
        """End the calls still waiting for an OriginateResponse that never came (the pipeline
        calls this when the PBX has been quiet for a while)."""
        changes = self._st.begin()
        originates.flush_pending_ends(self._st, None)
        return changes

    def live_calls(self) -> list[CallRecord]:
        return [rules.record(self._st, call) for call in self._st.calls.values()]

    def set_id(self, linkedid: str, call_id: int) -> None:
        """The database id of a call, so later snapshots carry it."""
        call = self._st.calls.get(linkedid)
        if call is not None:
            call.id = call_id
