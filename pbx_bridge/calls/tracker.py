"""AMI events in, one call record per customer call out: the call tracker (pure logic, no I/O).

A call is Asterisk's Linkedid on one PBX. The tracker follows every channel of the call (Local
channel halves `;1`/`;2` count as one leg), and reports what changed as `CallChange`s:
`started` once, `ringing` per operator per ring, `answered` once, `transferred`, `updated` for
changes of the public record, and `ended` exactly once.

How the record is decided (see also README "Call tracking"):

- direction: the `DIRECTION` channel variable when the dialplan sets it; otherwise from the
  channel that started the call (Uniqueid == Linkedid): an operator's channel (configured
  pattern) started an outbound call, or an internal one when it dialled an extension or an
  operator; a channel that ran in an inbound context started an inbound call. Never from the
  context of any other channel: on a SIP trunk the outbound leg runs in `from-trunk` too.
- answered: a Dial with a caller answered (`DialEnd ANSWER` with a `Channel`), an
  `AgentConnect`, a `Pickup`, or, when those were missed, two legs meeting in a bridge. A Dial
  without a caller is an `Originate` ringing its first party (the operator's phone in
  click-to-call, or the lab's stand-in customer): that answering is not the call's answer.
- status once ended: answered; else `QueueCallerAbandon` -> abandoned; an Originate whose
  first party never came up -> no_answer (rang out), busy, or failed (OriginateResponse Reason);
  else the last Dial's status: NOANSWER -> no_answer, BUSY -> busy, CANCEL (the caller
  gave up while it rang) -> abandoned, CHANUNAVAIL/CONGESTION -> failed; a queue left without
  abandon -> no_answer; no Dial at all -> abandoned (inbound) or failed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from crm_sync.phones import is_extension, normalize
from pbx_bridge.ami.events import AmiEvent, ChannelsSnapshot
from pbx_bridge.calls.changes import CallChange, ChangeKind
from pbx_bridge.calls.record import CallRecord, Direction, Leg, Status, Transfer, combine

_DIALLED = re.compile(r"\+?[0-9*#]{1,40}")
# A caller ID that is a phone number in some format: digits and separators, up to 20 digits.
_PHONE_LIKE = re.compile(r"\+?[0-9][0-9 ().\-]{0,30}")
_VARSET_NAMES = frozenset({"DIRECTION", "_DIRECTION", "__DIRECTION", "CALL_ID", "_CALL_ID",
                           "__CALL_ID"})
VALID_DIRECTIONS: frozenset[str] = frozenset({"inbound", "outbound", "internal"})
UNKNOWN_NAMES = frozenset({"", "<unknown>", "unknown", "anonymous", "Anonymous"})
# How many ended linkedids / hung-up uniqueids to remember so late duplicates do not resurrect
# a call; a few minutes of a busy PBX.
ENDED_MEMORY = 20_000
# Seconds (of event time) a call whose Originate rang no one but its first party waits, after
# its last channel hung up, for the OriginateResponse that names the number it was to dial.
ORIGINATE_RESPONSE_WAIT = 2.0
# OriginateResponse Reason (Asterisk's AST_CONTROL_*) of a failed Originate -> the call's status.
_ORIGINATE_FAILURE_STATUS: dict[str, str] = {"3": "NOANSWER", "5": "BUSY", "8": "CONGESTION"}
# ... and what the call then was (any other failure: "failed").
_ORIGINATE_OUTCOME: dict[str, Status] = {"NOANSWER": "no_answer", "BUSY": "busy"}
NORMALIZE_CACHE = 50_000
MAX_FIELD = 255  # values longer than this are junk for every field we keep


@dataclass
class TrackerSettings:
    pbx: str
    operator_channel: re.Pattern[str]  # named group `ext`
    inbound_contexts: frozenset[str]
    default_region: str = "RU"
    max_extension_length: int = 5


class _Prefix:
    """Header names of one channel snapshot inside an event (`Dest`, `Transferee`, ...)."""

    __slots__ = ("callerid_name", "callerid_num", "channel", "context", "exten", "linkedid",
                 "state", "uniqueid")

    def __init__(self, p: str) -> None:
        self.uniqueid = p + "Uniqueid"
        self.linkedid = p + "Linkedid"
        self.channel = p + "Channel"
        self.context = p + "Context"
        self.exten = p + "Exten"
        self.callerid_num = p + "CallerIDNum"
        self.callerid_name = p + "CallerIDName"
        self.state = p + "ChannelState"


_P = _Prefix("")
_DEST = _Prefix("Dest")
_TARGET = _Prefix("Target")
_TRANSFERER = _Prefix("Transferer")
_TRANSFEREE = _Prefix("Transferee")
_ORIG_TRANSFERER = _Prefix("OrigTransferer")
_SECOND_TRANSFERER = _Prefix("SecondTransferer")
_TRANSFER_TARGET = _Prefix("TransferTarget")


class _LegState:
    __slots__ = ("leg", "live")

    def __init__(self, leg: Leg) -> None:
        self.leg = leg
        self.live: set[str] = set()


class _Channel:
    __slots__ = (
        "call",
        "cid_name",
        "cid_num",
        "context",
        "ext",
        "exten",
        "inbound",
        "inbound_exten",
        "leg",
        "name",
        "uid",
        "up",
    )

    def __init__(self, call: _Call, uid: str, name: str, ext: str | None, leg: _LegState) -> None:
        self.call = call
        self.uid = uid
        self.name = name
        self.ext = ext
        self.leg = leg
        self.context = ""
        self.exten = ""
        self.inbound = False  # has run in an inbound context
        self.inbound_exten: str | None = None  # first number-like Exten seen there (the DID)
        self.cid_num = ""
        self.cid_name = ""
        self.up = False


class _Call:
    def __init__(self, linkedid: str, ts: float) -> None:
        self.linkedid = linkedid
        self.started_at = ts
        self.last_ts = ts
        self.channels: dict[str, _Channel] = {}
        self.live: set[str] = set()
        self.legs: dict[str, _LegState] = {}
        self.bridges: dict[str, str] = {}  # uid -> bridge id
        self.origin_uid: str | None = None
        self.customer_uid: str | None = None  # outbound: the first non-operator leg dialled
        self.direction_var: str | None = None
        self.dialled_raw: str | None = None
        self.operator: str | None = None  # who answered / took over last
        self.operators_rung: list[str] = []
        self.ring_active: dict[str, set[str]] = {}
        self.rung_uids: set[str] = set()
        self.pickups: dict[str, str] = {}  # picked-up uid -> picker's extension
        self.queue: str | None = None
        self.queue_abandoned = False
        self.queue_left = False
        self.transfers: list[Transfer] = []
        self.answered_at: float | None = None
        self.last_dial_status: str | None = None  # of Dials with a caller
        self.originate_status: str | None = None  # of Dials without one (Originate)
        self.originate_failed = False
        self.dialled_by: dict[str, str] = {}  # dest uid -> caller uid (Dials with a caller)
        self.answered_uids: set[str] = set()  # channels whose answer was taken (never twice)
        self.originated: set[str] = set()  # uids an Originate rang (Dials without a caller)
        self.originate_answered = False  # an OriginateResponse for this call came
        # Last channel gone, but an Originate that rang no one else has not reported yet: its
        # OriginateResponse (right after the Hangup) names the number it was meant to dial.
        self.ending_at: float | None = None
        self.external_dest = False
        self.operator_dest = False
        self.click_to_call_id: str | None = None
        self.started_emitted = False
        self.raw_sig: tuple[object, ...] = ()
        self.public_sig: tuple[object, ...] = ()
        # Restored from the database after a restart: what the events would have told us.
        self.fixed: CallRecord | None = None
        self.id: int | None = None


def _leg_key(channel: str, uid: str) -> str:
    """The two halves of a Local channel (`;1`, `;2`) are one leg; any other channel is one."""
    return channel[:-2] if channel.startswith("Local/") and channel[-2:] in (";1", ";2") else uid


def _valid_ts(ts: float) -> bool:
    return ts == ts and 0.0 < ts < 1e11  # not NaN, positive, before year 5138


def _duration_seconds(text: str) -> float:
    """CoreShowChannel `Duration: HH:MM:SS` -> seconds (0 when unreadable)."""
    try:
        parts = [int(p) for p in text.split(":")]
    except ValueError:
        return 0.0
    total = 0
    for p in parts[-3:]:
        total = total * 60 + p
    return float(total) if 0 <= total < 10 * 86400 else 0.0


class CallTracker:
    def __init__(self, settings: TrackerSettings) -> None:
        self.settings = settings
        self._calls: dict[str, _Call] = {}
        self._channels: dict[str, _Channel] = {}
        self._ended: dict[str, None] = {}  # recently ended/merged linkedids, oldest first
        self._gone: dict[str, None] = {}  # recently hung-up uniqueids
        self._alias: dict[str, str] = {}  # merged linkedid -> the call it joined
        self._norm_cache: dict[str, str | None] = {}
        self._op_cache: dict[str, str | None] = {}
        self._last_ts = 0.0
        self._changes: list[CallChange] = []
        self._emitted: set[int] = set()  # ids of calls that emitted during the current event
        # Calls waiting for their OriginateResponse (see ORIGINATE_RESPONSE_WAIT): linkedid -> the
        # time their last channel hung up.
        self._pending_ends: dict[str, float] = {}
        # Recently ended during an outage: what AMI knew of them, for CEL to complete.
        self._outage_ended: dict[str, CallRecord] = {}
        self._handlers = {
            "Newchannel": self._on_channel_event,
            "Newstate": self._on_newstate,
            "NewCallerid": self._on_channel_event,
            "Newexten": self._on_newexten,
            "VarSet": self._on_varset,
            "DialBegin": self._on_dial_begin,
            "DialEnd": self._on_dial_end,
            "BridgeEnter": self._on_bridge_enter,
            "BridgeLeave": self._on_bridge_leave,
            "Hangup": self._on_hangup,
            "CEL": self._on_cel,
            "QueueCallerJoin": self._on_queue_join,
            "QueueCallerAbandon": self._on_queue_abandon,
            "QueueCallerLeave": self._on_queue_leave,
            "AgentCalled": self._on_agent_called,
            "AgentConnect": self._on_agent_connect,
            "BlindTransfer": self._on_blind_transfer,
            "AttendedTransfer": self._on_attended_transfer,
            "Pickup": self._on_pickup,
            "OriginateResponse": self._on_originate_response,
        }

    # --- public API ---------------------------------------------------------------------

    def feed(self, event: AmiEvent) -> list[CallChange]:
        name = event.name
        handler = self._handlers.get(name)
        if handler is None:
            return []
        # The three most frequent events rarely matter: decide before any other work.
        h = event.headers
        if name == "VarSet":
            if h.get("Variable") not in _VARSET_NAMES:
                return []
        elif name == "Newexten":
            ch = self._channels.get(h.get("Uniqueid", ""))
            if ch is None or h.get("Context") == ch.context:
                return []
        elif name == "CEL" and h.get("EventName") != "LINKEDID_END":
            return []
        ts = event.timestamp
        if not _valid_ts(ts):
            ts = self._last_ts
        elif ts > self._last_ts:
            self._last_ts = ts
        changes: list[CallChange] = []
        self._changes = changes
        self._emitted.clear()
        if self._pending_ends:
            self._flush_pending_ends(ts)
        try:
            call = handler(event, ts)
            if call is not None:
                self._after_event(call)
        except Exception:
            # Junk we did not foresee: drop the rest of the event. Handlers only ever touch
            # the call the event names, so other calls are unaffected.
            return changes
        return changes

    def resync(self, snapshot: ChannelsSnapshot) -> list[CallChange]:
        """After a (re)login: CoreShowChannels is the truth. Calls not in it ended while we
        were away; calls we did not know are picked up from what the snapshot shows."""
        changes: list[CallChange] = []
        self._changes = changes
        self._emitted.clear()
        self._flush_pending_ends(None)
        at = snapshot.at if _valid_ts(snapshot.at) else self._last_ts
        by_linkedid: dict[str, list[AmiEvent]] = {}
        present: set[str] = set()
        for ev in snapshot.channels:
            uid = ev.headers.get("Uniqueid")
            linkedid = ev.headers.get("Linkedid")
            if not uid or not linkedid or len(uid) > MAX_FIELD or len(linkedid) > MAX_FIELD:
                continue
            present.add(uid)
            by_linkedid.setdefault(self._alias.get(linkedid, linkedid), []).append(ev)
        self._join_bridged(by_linkedid)
        for call in list(self._calls.values()):
            if call.linkedid in by_linkedid or any(uid in present for uid in call.live):
                continue
            self._end(call, call.last_ts, outage=True)
        for linkedid, events in by_linkedid.items():
            if linkedid in self._ended:
                continue
            try:
                self._resync_call(linkedid, events, at, present)
            except Exception:  # noqa: S112 - a junk snapshot entry must not stop the others
                continue
        return changes

    def _join_bridged(self, by_linkedid: dict[str, list[AmiEvent]]) -> None:
        """Channels of two Linkedids in one bridge are one call (Asterisk gives them the oldest
        Linkedid; a snapshot taken just then may still show the newer one on one of them)."""
        by_bridge: dict[str, list[str]] = {}
        for linkedid, events in by_linkedid.items():
            for ev in events:
                bridge = ev.headers.get("BridgeId", "")
                if bridge and linkedid not in by_bridge.setdefault(bridge, []):
                    by_bridge[bridge].append(linkedid)
        for linkedids in by_bridge.values():
            alive = [lid for lid in linkedids if lid in by_linkedid]
            if len(alive) < 2:
                continue

            def age(lid: str) -> tuple[int, float]:
                known = self._calls.get(lid)
                if known is not None:
                    return (0, known.started_at)
                return (1, -max(_duration_seconds(e.headers.get("Duration", ""))
                                for e in by_linkedid[lid]))

            keep, *others = sorted(alive, key=age)
            for other in others:
                for ev in by_linkedid.pop(other):
                    headers = dict(ev.headers)
                    headers["Linkedid"] = keep
                    by_linkedid[keep].append(AmiEvent(ev.pbx, ev.name, headers, ev.variables,
                                                      ev.received_at, ev.seq))
                src, dst = self._calls.get(other), self._calls.get(keep)
                if src is not None and dst is not None:
                    self._merge(src, dst)
                elif src is not None:
                    self._alias[other] = keep

    def restore(self, records: list[CallRecord]) -> None:
        """Calls the database still has live after a restart; the first snapshot then ends the
        ones that are gone and keeps following the others."""
        for rec in records:
            if rec.ended_at is not None or rec.linkedid in self._calls:
                continue
            call = _Call(rec.linkedid, rec.started_at)
            call.fixed = rec
            call.id = rec.id
            call.direction_var = rec.direction if rec.direction in VALID_DIRECTIONS else None
            call.operator = rec.operator
            call.operators_rung = list(rec.operators_rung)
            call.queue = rec.queue
            call.transfers = list(rec.transfers)
            call.answered_at = rec.answered_at
            call.click_to_call_id = rec.click_to_call_id
            call.started_emitted = True
            for leg in rec.legs:
                state = _LegState(Leg(**vars(leg)))
                call.legs[_leg_key(leg.channel, leg.uniqueid)] = state
                if leg.hungup_at is None and leg.uniqueid not in self._channels:
                    ch = _Channel(call, leg.uniqueid, leg.channel, leg.extension, state)
                    call.channels[leg.uniqueid] = ch
                    call.live.add(leg.uniqueid)
                    state.live.add(leg.uniqueid)
                    self._channels[leg.uniqueid] = ch
                    if leg.uniqueid == rec.linkedid:
                        call.origin_uid = leg.uniqueid
            # The last time anything was known of it: what an outage end time falls back to.
            call.last_ts = max(t for t in [rec.started_at, rec.answered_at,
                                           *(leg.created_at for leg in rec.legs),
                                           *(leg.answered_at for leg in rec.legs),
                                           *(leg.hungup_at for leg in rec.legs)]
                               if t is not None)
            self._calls[rec.linkedid] = call
            call.public_sig = self._public_sig(self._record(call))

    def absorb(self, records: list[CallRecord], merged: dict[str, str], *,
               leave_after: float | None) -> list[CallChange]:
        """Calls rebuilt from CEL (pbx_bridge.calls.rebuild), all of them over. A call still
        live here is ended with CEL's record, completed with what the events told (`ami+cel`),
        unless it ended after `leave_after` (the PBX is connected: its last events may be on
        their way). A call these events ended whole is left alone; one ended during an outage
        is completed. `merged`: Linkedids CEL shows joined another call."""
        changes: list[CallChange] = []
        self._changes = changes
        self._emitted.clear()
        for linkedid, into in merged.items():
            src = self._calls.get(linkedid)
            if src is None or src.linkedid != linkedid:
                # Not followed here (ended during an outage, or never heard): a row of its own
                # in the log is no call, and goes.
                changes.append(CallChange("updated", CallRecord(
                    self.settings.pbx, linkedid, 0.0, merged_into=into)))
                continue
            dst = self._calls.get(self._alias.get(into, into))
            if dst is not None and dst is not src:
                self._merge(src, dst)
                continue
            rec = self._record(src)
            self._drop(src)
            rec.merged_into = into
            changes.append(CallChange("updated", rec))
        for rec in records:
            key = self._alias.get(rec.linkedid, rec.linkedid)
            call = self._calls.get(key)
            if call is not None:
                if (leave_after is not None and call.fixed is None and rec.ended_at is not None
                        and rec.ended_at > leave_after):
                    continue
                rec = combine(rec, self._record(call))
                self._drop(call)
            elif key in self._ended and key not in self._outage_ended:
                continue  # the events ended it whole: that record stands
            else:
                known = self._outage_ended.pop(key, None)
                if known is not None:
                    rec = combine(rec, known)
                self._remember(self._ended, key)
            changes.append(CallChange("ended", rec, rec.operator, backfilled=True))
        return changes

    def _drop(self, call: _Call) -> None:
        """Forget a call without reporting anything (CEL's record replaces it)."""
        self._pending_ends.pop(call.linkedid, None)
        for uid in call.channels:
            self._channels.pop(uid, None)
            self._remember(self._gone, uid)
        self._calls.pop(call.linkedid, None)
        self._remember(self._ended, call.linkedid)

    @property
    def has_pending_ends(self) -> bool:
        return bool(self._pending_ends)

    def flush_pending_ends(self) -> list[CallChange]:
        """End the calls still waiting for an OriginateResponse that never came (the pipeline
        calls this when the PBX has been quiet for a while)."""
        changes: list[CallChange] = []
        self._changes = changes
        self._emitted.clear()
        self._flush_pending_ends(None)
        return changes

    def _flush_pending_ends(self, now: float | None) -> None:
        for linkedid, ending in list(self._pending_ends.items()):
            if now is not None and now < ending + ORIGINATE_RESPONSE_WAIT:
                continue
            del self._pending_ends[linkedid]
            call = self._calls.get(linkedid)
            if call is not None:
                self._end(call, ending)

    def live_calls(self) -> list[CallRecord]:
        return [self._record(call) for call in self._calls.values()]

    def set_id(self, linkedid: str, call_id: int) -> None:
        """The database id of a call, so later snapshots carry it."""
        call = self._calls.get(linkedid)
        if call is not None:
            call.id = call_id

    # --- channels and calls ------------------------------------------------------------

    def _touch(self, ev: AmiEvent, ts: float, p: _Prefix, create: bool) -> _Channel | None:
        """The channel an event (or one of its prefixed snapshots) is about, created on first
        sight, with its context, extension and caller id brought up to date."""
        h = ev.headers
        uid = h.get(p.uniqueid)
        if not uid or len(uid) > MAX_FIELD:
            return None
        ch = self._channels.get(uid)
        if ch is None:
            if uid in self._gone:
                return None
            linkedid = h.get(p.linkedid)
            if not linkedid or len(linkedid) > MAX_FIELD:
                return None
            linkedid = self._alias.get(linkedid, linkedid)
            call = self._calls.get(linkedid)
            if call is None:
                if not create or linkedid in self._ended:
                    return None
                call = _Call(linkedid, ts)
                self._calls[linkedid] = call
            name = h.get(p.channel, "")
            if len(name) > MAX_FIELD:
                name = name[:MAX_FIELD]
            ch = self._add_channel(call, uid, name, ts)
        else:
            call = ch.call
            linkedid = h.get(p.linkedid)
            if linkedid and linkedid != call.linkedid:
                # Channels meeting in a bridge take the oldest Linkedid: one call, not two.
                target = self._calls.get(self._alias.get(linkedid, linkedid))
                if target is not None and target is not call:
                    self._merge(call, target)
                    call = target
        if ts and ts < call.started_at:
            call.started_at = ts
        if ts > call.last_ts:
            call.last_ts = ts
        ctx = h.get(p.context)
        if ctx and ctx != ch.context:
            ch.context = ctx
            if ctx in self.settings.inbound_contexts:
                ch.inbound = True
        exten = h.get(p.exten)
        if exten:
            ch.exten = exten
            if (ch.inbound_exten is None and ctx in self.settings.inbound_contexts
                    and len(exten) > self.settings.max_extension_length and len(exten) < 40):
                ch.inbound_exten = exten
        num = h.get(p.callerid_num)
        if num is not None and len(num) <= 64:
            ch.cid_num = num
        name_ = h.get(p.callerid_name)
        if name_ is not None and len(name_) <= MAX_FIELD:
            ch.cid_name = name_
        if p is _P and ev.variables:
            self._apply_vars(call, ev.variables)
        return ch

    def _add_channel(self, call: _Call, uid: str, name: str, ts: float) -> _Channel:
        base = _leg_key(name, uid)
        state = call.legs.get(base)
        ext = self._operator_ext(name)
        if state is None:
            state = _LegState(Leg(uniqueid=uid, channel=name, role="other", extension=ext,
                                  created_at=ts))
            call.legs[base] = state
        elif name.endswith(";1"):
            # The ;1 half names the leg: it is what Dial rang and what MixMonitor records.
            state.leg.uniqueid = uid
            state.leg.channel = name
        if ts and ts < state.leg.created_at:
            state.leg.created_at = ts
        ch = _Channel(call, uid, name, ext, state)
        call.channels[uid] = ch
        call.live.add(uid)
        state.live.add(uid)
        self._channels[uid] = ch
        if call.origin_uid is None or uid == call.linkedid:
            call.origin_uid = uid
        return ch

    def _operator_ext(self, name: str) -> str | None:
        try:
            return self._op_cache[name]
        except KeyError:
            pass
        m = self.settings.operator_channel.match(name)
        ext = None
        if m is not None:
            try:
                ext = m.group("ext") or None
            except IndexError:
                ext = None
        if len(self._op_cache) > NORMALIZE_CACHE:
            self._op_cache.clear()
        self._op_cache[name] = ext
        return ext

    def _apply_vars(self, call: _Call, variables: dict[str, str]) -> None:
        direction = variables.get("DIRECTION")
        if direction and call.direction_var is None:
            direction = direction.strip().lower()
            if direction in VALID_DIRECTIONS:
                call.direction_var = direction
        call_id = variables.get("CALL_ID")
        if call_id and call.click_to_call_id is None and len(call_id) <= 64:
            call.click_to_call_id = call_id

    def _merge(self, src: _Call, dst: _Call) -> None:
        """src's channels joined dst (a transfer or pickup bridged them): src is no call of its
        own any more. Its record is reported once more with `merged_into` so the store drops
        it; its operators join dst's, in order."""
        for uid, ch in src.channels.items():
            ch.call = dst
            dst.channels[uid] = ch
        dst.live |= src.live
        for key, state in src.legs.items():
            dst.legs.setdefault(key, state)
        dst.bridges.update(src.bridges)
        for ext in src.operators_rung:
            if ext not in dst.operators_rung:
                dst.operators_rung.append(ext)
        for ext, uids in src.ring_active.items():
            dst.ring_active.setdefault(ext, set()).update(uids)
        dst.rung_uids |= src.rung_uids
        dst.pickups.update(src.pickups)
        dst.started_at = min(dst.started_at, src.started_at)
        dst.last_ts = max(dst.last_ts, src.last_ts)
        self._calls.pop(src.linkedid, None)
        for k, v in list(self._alias.items()):
            if v == src.linkedid:
                self._alias[k] = dst.linkedid
        self._alias[src.linkedid] = dst.linkedid
        if len(self._alias) > ENDED_MEMORY:
            del self._alias[next(iter(self._alias))]
        self._remember(self._ended, src.linkedid)
        if src.started_emitted:
            rec = self._record(src)
            rec.merged_into = dst.linkedid
            self._changes.append(CallChange("updated", rec))

    # --- event handlers (each returns the call it touched) ------------------------------

    def _on_channel_event(self, ev: AmiEvent, ts: float) -> _Call | None:
        ch = self._touch(ev, ts, _P, True)
        return ch.call if ch is not None else None

    def _on_newstate(self, ev: AmiEvent, ts: float) -> _Call | None:
        ch = self._touch(ev, ts, _P, True)
        if ch is None:
            return None
        if ev.headers.get("ChannelState") == "6" and not ch.up:
            ch.up = True
            if ch.leg.leg.answered_at is None:
                ch.leg.leg.answered_at = ts
        return ch.call

    def _on_newexten(self, ev: AmiEvent, ts: float) -> _Call | None:
        # The most frequent event: only a context change (a call reaching an inbound context)
        # matters, and only for channels we know.
        h = ev.headers
        ch = self._channels.get(h.get("Uniqueid", ""))
        if ch is None or h.get("Context") == ch.context:
            return None
        ch = self._touch(ev, ts, _P, False)
        return ch.call if ch is not None else None

    def _on_varset(self, ev: AmiEvent, ts: float) -> _Call | None:
        h = ev.headers
        var = h.get("Variable", "").lstrip("_")
        if var not in ("DIRECTION", "CALL_ID"):
            return None
        ch = self._channels.get(h.get("Uniqueid", ""))
        if ch is None:
            return None
        self._apply_vars(ch.call, {var: h.get("Value", "")})
        return ch.call

    def _on_dial_begin(self, ev: AmiEvent, ts: float) -> _Call | None:
        caller = self._touch(ev, ts, _P, True)
        dest = self._touch(ev, ts, _DEST, True)
        if dest is None:
            return caller.call if caller is not None else None
        call = dest.call
        if caller is not None:
            if caller.call is not call:
                self._merge(dest.call, caller.call)
                call = caller.call
            if caller.uid == call.origin_uid and call.dialled_raw is None:
                exten = ev.headers.get("Exten", "")
                # FreePBX dials trunks from a macro whose Exten is `s`: only a number counts.
                if exten and len(exten) < 64 and _DIALLED.fullmatch(exten):
                    call.dialled_raw = exten
            call.dialled_by[dest.uid] = caller.uid
            if dest.ext is not None:
                call.operator_dest = True
            elif not dest.name.startswith("Local/") or caller.ext is not None:
                call.external_dest = True
                if call.customer_uid is None and caller.ext is not None:
                    call.customer_uid = dest.uid
        else:
            call.originated.add(dest.uid)
        self._ring(call, dest)
        return call

    def _on_dial_end(self, ev: AmiEvent, ts: float) -> _Call | None:
        caller = self._touch(ev, ts, _P, False)
        dest = self._touch(ev, ts, _DEST, False)
        if dest is None:
            return caller.call if caller is not None else None
        call = dest.call
        if caller is not None and caller.call is not call:
            # The dialled channel came from another call (a pickup's channel, originated on
            # its own, answering the trunk's Dial): it joins the caller's call.
            self._merge(call, caller.call)
            call = caller.call
        self._ring_over(call, dest)
        status = ev.headers.get("DialStatus", "")
        if caller is not None:
            if status == "ANSWER":
                if self._consultation(call, caller):
                    # An operator consulting a colleague while the customer waits (Atxfer's
                    # Local pair dialling 102): that leg answered, not the call; who talks with
                    # the customer changes only when the transfer completes.
                    if dest.leg.leg.answered_at is None:
                        dest.leg.leg.answered_at = ts
                else:
                    self._answer(call, ts, dest)
            elif status:
                call.last_dial_status = status
        elif status:
            call.originate_status = status
        return call

    def _consultation(self, call: _Call, caller: _Channel) -> bool:
        """A Dial placed, once the call was answered, by a channel that is neither the one
        that started the call nor the customer's: a consultation, not the call being taken."""
        if call.answered_at is None:
            return False
        origin = call.channels.get(call.origin_uid or "")
        customer = call.channels.get(call.customer_uid or "")
        return not any(ch is not None and caller.leg is ch.leg for ch in (origin, customer))

    def _operator_behind(self, call: _Call, ch: _Channel) -> str | None:
        """The operator a channel stands for: its own extension, or, for a Local pair (Atxfer's
        `Local/102@transfer`), the operator's phone that pair dialled or is bridged with."""
        if ch.ext is not None:
            return ch.ext
        leg_uids = {c.uid for c in call.channels.values() if c.leg is ch.leg}
        bridges = {call.bridges[u] for u in leg_uids if u in call.bridges}
        found: _Channel | None = None
        for other in call.channels.values():
            if other.ext is None or other.leg is ch.leg:
                continue
            if call.dialled_by.get(other.uid) in leg_uids or call.bridges.get(other.uid) in bridges:
                if found is None or (other.up and not found.up):
                    found = other
        return found.ext if found is not None else None

    def _on_bridge_enter(self, ev: AmiEvent, ts: float) -> _Call | None:
        ch = self._touch(ev, ts, _P, True)
        if ch is None:
            return None
        call = ch.call
        bridge = ev.headers.get("BridgeUniqueid", "")
        if not bridge:
            return call
        call.bridges[ch.uid] = bridge
        if call.answered_at is None:
            self._answer_from_bridge(call, bridge, ts)
        return call

    def _answer_from_bridge(self, call: _Call, bridge: str, ts: float) -> None:
        """Two legs of the call in one bridge: it was answered (when the Dial events were
        missed, or the call was only seen in a snapshot)."""
        members = [call.channels[uid] for uid, b in call.bridges.items()
                   if b == bridge and uid in call.channels and uid in call.live]
        if len({id(m.leg) for m in members}) < 2:
            return
        origin = call.channels.get(call.origin_uid or "")
        answerer = None
        for m in members:
            if m.ext is not None and m is not origin and (origin is None or m.ext != origin.ext):
                answerer = m
                break
        if answerer is None:
            answerer = next((m for m in members if m is not origin), members[0])
        self._answer(call, ts, answerer)

    def _on_bridge_leave(self, ev: AmiEvent, ts: float) -> _Call | None:
        ch = self._channels.get(ev.headers.get("Uniqueid", ""))
        if ch is None:
            return None
        self._follow_linkedid(ch, ev.headers.get("Linkedid"))
        ch.call.bridges.pop(ch.uid, None)
        return None

    def _follow_linkedid(self, ch: _Channel, linkedid: str | None) -> None:
        """A channel now carrying another call's Linkedid joined that call (seen on events that
        otherwise only look the channel up)."""
        if not linkedid or linkedid == ch.call.linkedid:
            return
        target = self._calls.get(self._alias.get(linkedid, linkedid))
        if target is not None and target is not ch.call:
            self._merge(ch.call, target)

    def _on_hangup(self, ev: AmiEvent, ts: float) -> _Call | None:
        h = ev.headers
        uid = h.get("Uniqueid")
        if not uid or len(uid) > MAX_FIELD:
            return None
        ch = self._channels.get(uid)
        if ch is None:
            # Before its Newchannel, or of a call we never saw: remember it so a late
            # Newchannel does not open a channel that never hangs up.
            self._remember(self._gone, uid)
            return None
        self._follow_linkedid(ch, h.get("Linkedid"))
        call = ch.call
        if _valid_ts(ts) and ts > call.last_ts:
            call.last_ts = ts
        self._channel_gone(call, ch, ts, h.get("Cause-txt") or h.get("Cause"))
        if not call.live:
            if self._awaits_originate_response(call):
                call.ending_at = ts
                self._pending_ends[call.linkedid] = ts
                return None
            self._end(call, ts)
            return None
        return call

    def _awaits_originate_response(self, call: _Call) -> bool:
        """The call is only an Originate ringing its first party, who never answered: its
        OriginateResponse, right behind this Hangup, says what number it was meant to dial."""
        return (call.ending_at is None and not call.originate_answered
                and call.answered_at is None and call.dialled_raw is None
                and call.origin_uid is not None and call.origin_uid in call.originated)

    def _channel_gone(self, call: _Call, ch: _Channel, ts: float, cause: str | None) -> None:
        call.live.discard(ch.uid)
        call.bridges.pop(ch.uid, None)
        self._ring_over(call, ch)
        self._remember(self._gone, ch.uid)
        leg = ch.leg
        leg.live.discard(ch.uid)
        if cause and leg.leg.hangup_cause is None and len(cause) <= 64:
            leg.leg.hangup_cause = cause
        if not leg.live and leg.leg.hungup_at is None:
            leg.leg.hungup_at = ts

    def _on_cel(self, ev: AmiEvent, ts: float) -> _Call | None:
        h = ev.headers
        if h.get("EventName") != "LINKEDID_END":
            return None
        linkedid = h.get("LinkedID") or h.get("Linkedid") or ""
        call = self._calls.get(self._alias.get(linkedid, linkedid))
        if call is None or call.linkedid != linkedid:
            # A merged call's own LINKEDID_END says nothing about the call it joined.
            return None
        if call.ending_at is not None:
            return None  # its OriginateResponse follows (Asterisk sends it after the CEL)
        if not call.live and self._awaits_originate_response(call):
            call.ending_at = ts
            self._pending_ends[call.linkedid] = ts
            return None
        self._end(call, ts)
        return None

    def _on_queue_join(self, ev: AmiEvent, ts: float) -> _Call | None:
        ch = self._touch(ev, ts, _P, True)
        if ch is None:
            return None
        queue = ev.headers.get("Queue")
        if queue and ch.call.queue is None and len(queue) <= 64:
            ch.call.queue = queue
        return ch.call

    def _on_queue_abandon(self, ev: AmiEvent, ts: float) -> _Call | None:
        ch = self._touch(ev, ts, _P, False)
        if ch is None:
            return None
        ch.call.queue_abandoned = True
        return ch.call

    def _on_queue_leave(self, ev: AmiEvent, ts: float) -> _Call | None:
        ch = self._touch(ev, ts, _P, False)
        if ch is None:
            return None
        ch.call.queue_left = True
        return ch.call

    def _on_agent_called(self, ev: AmiEvent, ts: float) -> _Call | None:
        caller = self._touch(ev, ts, _P, True)
        dest = self._touch(ev, ts, _DEST, True)
        if caller is None or dest is None:
            return None
        call = caller.call
        queue = ev.headers.get("Queue")
        if queue and call.queue is None and len(queue) <= 64:
            call.queue = queue
        if dest.call is call:
            self._ring(call, dest)
        return call

    def _on_agent_connect(self, ev: AmiEvent, ts: float) -> _Call | None:
        caller = self._touch(ev, ts, _P, False)
        dest = self._touch(ev, ts, _DEST, False)
        if caller is None or dest is None or dest.call is not caller.call:
            return caller.call if caller is not None else None
        self._answer(caller.call, ts, dest)
        return caller.call

    def _on_blind_transfer(self, ev: AmiEvent, ts: float) -> _Call | None:
        if ev.headers.get("Result", "Success") != "Success":
            return None
        transferer = self._touch(ev, ts, _TRANSFERER, False)
        transferee = self._touch(ev, ts, _TRANSFEREE, False)
        ref = transferee or transferer
        if ref is None:
            return None
        call = ref.call
        exten = ev.headers.get("Extension", "")
        to_op = exten if is_extension(exten, self.settings.max_extension_length) else None
        from_op = transferer.ext if transferer is not None else call.operator
        if not self._add_transfer(call, Transfer("blind", ts, from_op, to_op)):
            return call
        if to_op is not None:
            call.operator = to_op
        self._emit(call, "transferred", to_op)
        return call

    def _on_attended_transfer(self, ev: AmiEvent, ts: float) -> _Call | None:
        if ev.headers.get("Result", "Success") != "Success":
            return None
        transferee = self._touch(ev, ts, _TRANSFEREE, False)
        orig = self._touch(ev, ts, _ORIG_TRANSFERER, False)
        second = self._touch(ev, ts, _SECOND_TRANSFERER, False)
        target = self._touch(ev, ts, _TRANSFER_TARGET, False)
        main = transferee or orig
        if main is None:
            return None
        call = main.call
        for other in (second, target, orig):
            if other is not None and other.call is not call:
                self._merge(other.call, call)
        from_op = (orig.ext if orig is not None else None) or call.operator
        to_op = self._operator_behind(call, target) if target is not None else None
        if to_op is None:
            exten = ev.headers.get("TransferTargetExten", "")
            if exten in call.operators_rung:
                to_op = exten  # the extension the consultation dialled, already rung for this call
        if not self._add_transfer(call, Transfer("attended", ts, from_op, to_op)):
            return call
        if to_op is not None:
            call.operator = to_op
            if to_op not in call.operators_rung:
                call.operators_rung.append(to_op)
        self._emit(call, "transferred", to_op)
        return call

    @staticmethod
    def _add_transfer(call: _Call, transfer: Transfer) -> bool:
        """False for a transfer already recorded (the same event seen twice)."""
        if any(t.kind == transfer.kind and t.at == transfer.at for t in call.transfers):
            return False
        call.transfers.append(transfer)
        return True

    def _on_pickup(self, ev: AmiEvent, ts: float) -> _Call | None:
        picker = self._touch(ev, ts, _P, True)
        target = self._touch(ev, ts, _TARGET, False)
        if target is None:
            return picker.call if picker is not None else None
        call = target.call
        if picker is not None and picker.call is not call:
            self._merge(picker.call, call)
        from_op = target.ext
        to_op = picker.ext if picker is not None else None
        if not self._add_transfer(call, Transfer("pickup", ts, from_op, to_op)):
            return call
        if to_op is not None:
            call.pickups[target.uid] = to_op
        self._ring_over(call, target)
        if call.answered_at is None and picker is not None:
            self._answer(call, ts, picker)
        elif to_op is not None:
            call.operator = to_op
        self._emit(call, "transferred", to_op)
        return call

    def _on_originate_response(self, ev: AmiEvent, ts: float) -> _Call | None:
        """Sent to every AMI session for every Originate, whoever placed it (our click-to-call,
        a CRM's own AMI client, FreePBX's click-to-call module): where the call was to go
        (`Context`/`Exten`) and whether the first party answered."""
        h = ev.headers
        ch = self._channels.get(h.get("Uniqueid", ""))
        call = ch.call if ch is not None else self._pending_for_channel(h.get("Channel", ""))
        if call is None:
            return None
        call.originate_answered = True
        if h.get("Response") == "Failure":
            call.originate_failed = True
            status = _ORIGINATE_FAILURE_STATUS.get(h.get("Reason", ""))
            if status is not None and call.originate_status in (None, "ANSWER"):
                call.originate_status = status
        exten = h.get("Exten", "")
        if call.dialled_raw is None and 0 < len(exten) < 64 and _DIALLED.fullmatch(exten):
            call.dialled_raw = exten
        if call.ending_at is not None:
            self._pending_ends.pop(call.linkedid, None)
            self._after_event(call)
            self._end(call, call.ending_at)
            return None
        return call

    def _pending_for_channel(self, dial: str) -> _Call | None:
        """The call a failed OriginateResponse is about when it names no Uniqueid (no ChannelId
        was given): its `Channel` is the dial string (`PJSIP/101`, `Local/101@op-phone/n`), the
        first party's channel name that string plus `-<sequence>`."""
        if not dial or not self._pending_ends:
            return None
        stem = dial.rsplit("/", 1)[0] if dial.startswith("Local/") and dial.count("/") > 1 else dial
        for linkedid in self._pending_ends:
            call = self._calls.get(linkedid)
            origin = call.channels.get(call.origin_uid or "") if call is not None else None
            if origin is not None and origin.name.startswith(stem + "-"):
                return call
        return None

    # --- call progress -----------------------------------------------------------------

    def _ring(self, call: _Call, dest: _Channel) -> None:
        ext = dest.ext
        if ext is None or dest.uid in call.rung_uids or dest.uid not in call.live:
            return
        call.rung_uids.add(dest.uid)
        if ext not in call.operators_rung:
            call.operators_rung.append(ext)
        ringing = call.ring_active.setdefault(ext, set())
        ringing.add(dest.uid)
        if len(ringing) == 1:
            self._emit(call, "ringing", ext)

    def _ring_over(self, call: _Call, ch: _Channel) -> None:
        if ch.ext is not None:
            ringing = call.ring_active.get(ch.ext)
            if ringing:
                ringing.discard(ch.uid)

    def _answer(self, call: _Call, ts: float, dest: _Channel) -> None:
        if dest.uid in call.answered_uids and call.answered_at is not None:
            return  # the same answer seen again (a replayed event): it must not undo a transfer
        call.answered_uids.add(dest.uid)
        ext = call.pickups.get(dest.uid) or dest.ext
        if ext is not None:
            origin = call.channels.get(call.origin_uid or "")
            # The operator placing an outbound call is not its answerer.
            if origin is not None and origin.ext == ext and origin.leg is not dest.leg:
                ext = None
        first = call.answered_at is None
        if first:
            call.answered_at = ts
        if dest.leg.leg.answered_at is None:
            dest.leg.leg.answered_at = ts
        previous = call.operator
        if ext is not None:
            call.operator = ext
        if first:
            self._emit(call, "answered", None)
        elif ext is not None and previous is not None and ext != previous:
            # Another operator took the answered call without any transfer event: the customer
            # was sent on by a Redirect (an AMI client's, an operator panel's) or the dialplan.
            if self._add_transfer(call, Transfer("blind", ts, previous, ext)):
                self._emit(call, "transferred", ext)

    def _end(self, call: _Call, ts: float, outage: bool = False) -> None:
        self._pending_ends.pop(call.linkedid, None)
        if call.linkedid not in self._calls:
            return
        if not _valid_ts(ts) or ts < call.started_at:
            ts = max(call.last_ts, call.started_at)
        for state in call.legs.values():
            if state.leg.hungup_at is None:
                state.leg.hungup_at = ts
            state.live.clear()
        for uid in call.channels:
            self._channels.pop(uid, None)
            self._remember(self._gone, uid)
        call.live.clear()
        del self._calls[call.linkedid]
        self._remember(self._ended, call.linkedid)
        rec = self._record(call, ended_at=ts, outage=outage)
        if outage:
            self._outage_ended[call.linkedid] = rec
            if len(self._outage_ended) > ENDED_MEMORY:
                del self._outage_ended[next(iter(self._outage_ended))]
        if not call.started_emitted:
            self._emit(call, "started", None)
        self._changes.append(CallChange("ended", rec, rec.operator))
        self._emitted.add(id(call))

    def _emit(self, call: _Call, kind: ChangeKind, ext: str | None) -> None:
        if not call.started_emitted:
            call.started_emitted = True
            rec = self._record(call)
            call.public_sig = self._public_sig(rec)
            self._changes.append(CallChange("started", rec))
            if kind == "started":
                self._emitted.add(id(call))
                return
        if kind == "started":
            return
        rec = self._record(call)
        call.public_sig = self._public_sig(rec)
        if kind == "answered" and ext is None:
            ext = rec.operator
        self._changes.append(CallChange(kind, rec, ext))
        self._emitted.add(id(call))

    def _after_event(self, call: _Call) -> None:
        """`started` once the call says what it is; `updated` when the public record changed."""
        if call.linkedid not in self._calls:
            return
        origin = call.channels.get(call.origin_uid or "")
        raw = (call.direction_var, call.origin_uid, origin.inbound if origin else None,
               origin.cid_num if origin else None, origin.cid_name if origin else None,
               origin.inbound_exten if origin else None, call.dialled_raw, call.customer_uid,
               call.operator, len(call.operators_rung), call.queue, len(call.transfers),
               call.answered_at is not None, call.click_to_call_id, call.external_dest,
               call.operator_dest)
        if raw == call.raw_sig:
            return
        call.raw_sig = raw
        if not call.started_emitted:
            if self._direction(call) != "unknown":
                self._emit(call, "started", None)
            return
        if id(call) in self._emitted:
            return
        rec = self._record(call)
        sig = self._public_sig(rec)
        if sig != call.public_sig:
            call.public_sig = sig
            self._changes.append(CallChange("updated", rec))

    # --- resync ------------------------------------------------------------------------

    def _resync_call(self, linkedid: str, events: list[AmiEvent], at: float,
                     present: set[str]) -> None:
        call = self._calls.get(linkedid)
        known = call is not None
        if call is not None:
            # Channels we thought alive that Asterisk no longer has went during the outage.
            for uid in [u for u in call.live if u not in present]:
                self._channel_gone(call, call.channels[uid], call.last_ts, None)
        # Origin first: the channel that started the call decides its direction.
        events = sorted(events, key=lambda e: e.headers.get("Uniqueid") != linkedid)
        if not known and not _valid_ts(at):
            return  # a call we cannot time: leave it to the events
        for ev in events:
            created = at - _duration_seconds(ev.headers.get("Duration", ""))
            if call is not None and created < call.started_at:
                # Duration is whole seconds and `at` is when the answer arrived: never let
                # it move a known call's start.
                created = call.started_at
            ch = self._touch(ev, created, _P, True)
            if ch is None:
                continue
            call = ch.call
            if ev.headers.get("ChannelState") == "6" and not ch.up:
                ch.up = True
                if ch.leg.leg.answered_at is None and not known:
                    ch.leg.leg.answered_at = created
            bridge = ev.headers.get("BridgeId", "")
            if bridge:
                call.bridges[ch.uid] = bridge
            else:
                call.bridges.pop(ch.uid, None)
        if call is None:
            return
        if at > call.last_ts:
            call.last_ts = at
        if not known:
            # Nothing tells how the call began but the snapshot: a dialled operator is rung;
            # on an operator's call, the other party is the customer.
            origin = call.channels.get(call.origin_uid or "")
            for ch in list(call.channels.values()):
                if ch is origin or ch.name.endswith(";2") or (origin and ch.leg is origin.leg):
                    continue
                if ch.ext is not None:
                    call.operator_dest = True
                    self._ring(call, ch)
                elif origin is not None and origin.ext is not None:
                    call.external_dest = True
                    if call.customer_uid is None:
                        call.customer_uid = ch.uid
        if call.answered_at is None:
            for bridge in set(call.bridges.values()):
                members = [call.channels[u] for u, b in call.bridges.items() if b == bridge]
                if len({id(m.leg) for m in members}) >= 2:
                    answered = max((m.leg.leg.created_at for m in members), default=at)
                    self._answer_from_bridge(call, bridge, answered if not known else at)
                    break
        if not call.live:
            self._end(call, call.last_ts, outage=True)
            return
        self._after_event(call)

    # --- the record --------------------------------------------------------------------

    def _norm(self, raw: str | None) -> str | None:
        if not raw:
            return None
        try:
            return self._norm_cache[raw]
        except KeyError:
            pass
        s = self.settings
        try:
            value = normalize(raw, s.default_region, s.max_extension_length)
        except Exception:
            value = None
        if len(self._norm_cache) > NORMALIZE_CACHE:
            self._norm_cache.clear()
        self._norm_cache[raw] = value
        return value

    def _number(self, raw: str | None) -> str | None:
        """A party's number for the record: E.164 when it parses; a caller ID the phone library
        rejects (an unassigned range, a format it does not know) is still who called, kept as
        its digits (with its "+"), never dropped."""
        found = self._norm(raw)
        if found is not None or not raw:
            return found
        text = raw.strip()
        if text in UNKNOWN_NAMES or not _PHONE_LIKE.fullmatch(text):
            return None
        digits = "".join(ch for ch in text if ch.isdigit())
        if len(digits) <= self.settings.max_extension_length:
            return None
        return ("+" if text.startswith("+") else "") + digits

    def _direction(self, call: _Call) -> Direction:
        if call.direction_var is not None:
            return call.direction_var  # type: ignore[return-value]
        if call.fixed is not None:
            return call.fixed.direction
        origin = call.channels.get(call.origin_uid or "")
        if origin is None:
            return "unknown"
        if origin.ext is not None:
            dialled = call.dialled_raw
            if dialled and is_extension(dialled, self.settings.max_extension_length):
                return "internal"
            if call.external_dest or (dialled and self._norm(dialled)):
                return "outbound"
            if call.operator_dest:
                return "internal"
            return "unknown"
        if origin.inbound:
            return "inbound"
        return "unknown"

    def _record(self, call: _Call, ended_at: float | None = None,
                outage: bool = False) -> CallRecord:
        direction = self._direction(call)
        origin = call.channels.get(call.origin_uid or "")
        fixed = call.fixed
        number = name = did = dialled = None
        customer: _Channel | None = None
        if direction == "inbound" or (direction == "unknown" and origin is not None
                                      and origin.ext is None):
            customer = origin
            if customer is not None:
                number = self._number(customer.cid_num)
                if customer.inbound_exten:
                    did = self._number(customer.inbound_exten)
        elif direction == "outbound":
            dialled = call.dialled_raw or self._dialled_fallback(origin)
            customer = call.channels.get(call.customer_uid or "")
            if dialled is None and customer is not None and _DIALLED.fullmatch(customer.cid_num):
                # The dialled channel's caller ID is the number it was dialled with.
                dialled = customer.cid_num
            number = self._number(dialled)
            if customer is not None:
                own = self._number(customer.cid_num)
                if number is None:
                    number = own
                elif own != number:
                    customer = None  # its caller id is not the customer's
        elif direction == "internal":
            dialled = call.dialled_raw
        if customer is not None and number is not None:
            cname = customer.cid_name.strip()
            if (cname not in UNKNOWN_NAMES and cname != customer.cid_num
                    and self._norm(cname) != number):
                name = cname
        if dialled is None and direction == "internal":
            dialled = self._dialled_fallback(origin)
        if fixed is not None:
            number = number or fixed.customer_number
            name = name or fixed.customer_name
            did = did or fixed.did
            dialled = dialled or fixed.dialled
        operator = call.operator
        if operator is None and direction == "outbound" and origin is not None:
            operator = origin.ext
        customer_uid = customer.uid if customer is not None else None
        legs = []
        for state in call.legs.values():
            leg = state.leg
            if leg.extension is not None:
                leg.role = "operator"
            elif customer_uid is not None and state is call.channels[customer_uid].leg:
                leg.role = "customer"
            elif leg.channel.startswith("Local/"):
                leg.role = "local"
            else:
                leg.role = "other"
            legs.append(Leg(leg.uniqueid, leg.channel, leg.role, leg.extension, leg.created_at,
                            leg.answered_at, leg.hungup_at, leg.hangup_cause))
        rec = CallRecord(
            pbx=self.settings.pbx,
            linkedid=call.linkedid,
            started_at=call.started_at,
            direction=direction,
            customer_number=None if direction == "internal" else number,
            customer_name=None if direction == "internal" else name,
            did=did if direction in ("inbound", "unknown") else None,
            dialled=dialled if direction in ("outbound", "internal") else None,
            operator=operator,
            operators_rung=list(call.operators_rung),
            queue=call.queue,
            transfers=list(call.transfers),
            answered_at=call.answered_at,
            ended_at=ended_at,
            click_to_call_id=call.click_to_call_id,
            legs=legs,
            ended_during_outage=outage,
            id=call.id,
        )
        if ended_at is not None:
            rec.status = self._status(call, direction)
        return rec

    @staticmethod
    def _dialled_fallback(origin: _Channel | None) -> str | None:
        """No Dial seen (joined mid-call): what the operator's channel runs is what they dialled."""
        if origin is None or not origin.exten or origin.exten == origin.ext:
            return None
        return origin.exten if _DIALLED.fullmatch(origin.exten) else None

    @staticmethod
    def _status(call: _Call, direction: Direction) -> Status:
        if call.answered_at is not None:
            return "answered"
        if call.queue_abandoned:
            return "abandoned"
        if call.originate_failed:
            # Whose phone never came up, and why (OriginateResponse Reason, or its Dial's end):
            # rang out, busy, or failed (no such channel, congestion).
            return _ORIGINATE_OUTCOME.get(call.originate_status or "", "failed")
        status = call.last_dial_status
        if status is None and call.originate_status not in (None, "ANSWER"):
            status = call.originate_status
        if status == "NOANSWER":
            return "no_answer"
        if status == "BUSY":
            return "busy"
        if status in ("CHANUNAVAIL", "CONGESTION"):
            return "failed"
        if status == "CANCEL":
            return "abandoned"
        if call.queue_left:
            return "no_answer"
        return "abandoned" if direction == "inbound" else "failed"

    @staticmethod
    def _public_sig(rec: CallRecord) -> tuple[object, ...]:
        return (rec.direction, rec.customer_number, rec.customer_name, rec.did, rec.dialled,
                rec.operator, tuple(rec.operators_rung), rec.queue, len(rec.transfers),
                rec.click_to_call_id, rec.answered_at is not None)

    @staticmethod
    def _remember(memory: dict[str, None], key: str) -> None:
        memory[key] = None
        if len(memory) > ENDED_MEMORY:
            del memory[next(iter(memory))]

