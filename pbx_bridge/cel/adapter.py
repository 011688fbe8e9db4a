"""CEL rows of one call -> the AMI events Asterisk sent for it, so that the one CallTracker
(pbx_bridge.calls.tracker) builds the record from CEL as it does from AMI: no second reading of
what a call is.

CEL says less than AMI (shared notes `cel.md`); what the tracker needs is recovered from the
rows of the whole call, read twice (first what each channel was, then the events in order):

| AMI event the tracker reads        | from CEL                                                     |
|------------------------------------|--------------------------------------------------------------|
| Newchannel, NewCallerid (state)    | CHAN_START; any later row whose context, extension or caller |
|                                    | ID changed                                                   |
| Newstate Up                        | ANSWER                                                       |
| DialBegin with a caller            | CHAN_START of a channel whose rows say `AppDial`; the caller |
|                                    | is the channel whose `APP_START Dial` is the latest before   |
|                                    | it (without APP_START rows: the latest channel whose rows    |
|                                    | show it ran `Dial`, else the call's first channel)           |
| DialBegin without a caller         | CHAN_START of a channel whose rows say `AppDial2` (Originate)|
| DialEnd ANSWER                     | ANSWER of such a channel                                     |
| DialEnd BUSY, NOANSWER, CANCEL...  | HANGUP of such a channel before it answered: its cause (17   |
|                                    | busy, 26 answered elsewhere, ...), else the caller's         |
|                                    | `dialstatus` in its own HANGUP                               |
| QueueCallerJoin                    | APP_START Queue (the queue is the first argument)            |
| AgentCalled, AgentConnect          | CHAN_START, ANSWER of a channel whose rows say `AppQueue`    |
| QueueCallerAbandon / Leave         | HANGUP of a queued caller no member answered: abandoned when |
|                                    | it hung up itself (`hangupsource`), else left (timeout)      |
| BridgeEnter / BridgeLeave          | BRIDGE_ENTER / BRIDGE_EXIT (`extra.bridge_id`)               |
| Hangup                             | HANGUP (`extra.hangupcause`)                                 |
| Pickup, AttendedTransfer,          | PICKUP, ATTENDEDTRANSFER, BLINDTRANSFER (channels named in   |
| BlindTransfer                      | `extra`)                                                     |
| VarSet DIRECTION / CALL_ID         | USER_DEFINED rows named DIRECTION / CALL_ID, when the        |
|                                    | dialplan writes them (`CELGenUserEvent(DIRECTION,inbound)`)  |
| CEL LINKEDID_END                   | LINKEDID_END                                                 |

Not in CEL at all: the `OriginateResponse` (an Originate whose first party never answered
has no number to dial: its direction stays unknown) and queue members' ring events beyond the
channels themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pbx_bridge.ami.events import AmiEvent
from pbx_bridge.cel.rows import CelRow

# Asterisk's ast_cause2str() for the causes a call centre meets (AMI's `Cause-txt`).
CAUSE_TEXT: dict[int, str] = {
    0: "Unknown", 1: "Unallocated (unassigned) number", 3: "No route to destination",
    16: "Normal Clearing", 17: "User busy", 18: "No user responding",
    19: "User alerting, no answer", 20: "Subscriber absent", 21: "Call Rejected",
    26: "Answered elsewhere", 27: "Destination out of order", 28: "Invalid number format",
    34: "Circuit/channel congestion", 38: "Network out of order", 127: "Interworking, unspecified",
}
# What Dial makes of a dialled channel that hung up with this cause (app_dial's handle_cause):
# the rest end as the Dial as a whole did.
CAUSE_DIAL_STATUS: dict[int, str] = {
    17: "BUSY", 34: "CONGESTION", 42: "CONGESTION", 3: "CHANUNAVAIL", 20: "CHANUNAVAIL",
    27: "CHANUNAVAIL", 26: "CANCEL",
}
# CELGenUserEvent names taken as the channel variables the AMI path reads.
USER_VARIABLES = frozenset({"DIRECTION", "CALL_ID"})


@dataclass
class _Channel:
    """What the whole call's rows say of one channel (the first reading)."""

    apps: set[str] = field(default_factory=set)
    # How it came to exist: the first of AppQueue / AppDial / AppDial2 on its rows (a pickup
    # later swaps them between the picked and the picking channel).
    origin_app: str = ""
    queue_data: str = ""  # Queue(...) arguments seen on its rows
    # (row number, context, extension) of its rows that show it running Dial or Queue: where in
    # the dialplan it dialled, when no APP_START row says so.
    dialling_at: list[tuple[int, str, str]] = field(default_factory=list)
    dialstatus: str = ""  # of its HANGUP: how its last Dial ended
    hangupsource: str = ""
    answered: bool = False

    @property
    def kind(self) -> str | None:
        """Dialled by a Queue, by Dial, by an Originate, or None: it started on its own."""
        return _KINDS.get(self.origin_app)


_KINDS = {"AppQueue": "queue", "AppDial": "dial", "AppDial2": "originate"}


def _half(channel: str) -> str | None:
    """`;1` / `;2` for a Local channel half, else None."""
    if channel.startswith("Local/") and channel[-2:] in (";1", ";2"):
        return channel[-1]
    return None


def _int(value: object) -> int | None:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def _first_pass(rows: Sequence[CelRow]) -> dict[str, _Channel]:
    facts: dict[str, _Channel] = {}
    for number, row in enumerate(rows):
        ch = facts.setdefault(row.uniqueid, _Channel())
        if row.appname in ("Dial", "Queue") and row.exten:
            ch.dialling_at.append((number, row.context, row.exten))
        if row.appname:
            ch.apps.add(row.appname)
            if not ch.origin_app and row.appname in _KINDS:
                ch.origin_app = row.appname
        if row.appname == "Queue" and row.appdata:
            ch.queue_data = row.appdata
        if row.eventtype == "ANSWER":
            ch.answered = True
        elif row.eventtype == "HANGUP":
            extra = row.extra_json()
            ch.dialstatus = str(extra.get("dialstatus") or "").upper()
            ch.hangupsource = str(extra.get("hangupsource") or "")
    return facts


class _Replay:
    """The second reading: rows in order -> AMI events."""

    def __init__(self, rows: Sequence[CelRow], pbx: str) -> None:
        self.rows = rows
        self.pbx = pbx
        self.facts = _first_pass(rows)
        self.events: list[AmiEvent] = []
        self.state: dict[str, dict[str, str]] = {}  # uniqueid -> its headers as last known
        self.alive: dict[str, int] = {}  # uniqueid -> order it appeared (live channels)
        self.dialers: list[str] = []  # channels in the order of their APP_START Dial/Queue
        self.dialled: dict[str, str | None] = {}  # dest -> caller (None: an Originate)
        self.ringing: set[str] = set()  # dests whose Dial has not ended
        self.queued: set[str] = set()  # callers that joined a queue
        self.connected: set[str] = set()  # callers a queue member answered
        self.now = 0.0
        self.number = 0  # of the row being read

    # --- building events -----------------------------------------------------------------

    def emit(self, name: str, headers: dict[str, str]) -> None:
        # No `Timestamp` header: an event's time is then its `received_at` (AmiEvent.timestamp),
        # here the row's eventtime, without a round trip through text.
        self.events.append(AmiEvent(pbx=self.pbx, name=name, headers=headers,
                                    received_at=self.now))

    def snap(self, uid: str, prefix: str = "") -> dict[str, str]:
        state = self.state.get(uid) or {"Uniqueid": uid}
        return {prefix + key: value for key, value in state.items()}

    def _observe(self, row: CelRow) -> None:
        """The channel's state at this row; a NewCallerid when it changed (first sight is a
        Newchannel)."""
        new = {"Channel": row.channame, "Uniqueid": row.uniqueid, "Linkedid": row.linkedid,
               "Context": row.context, "Exten": row.exten, "CallerIDNum": row.cid_num,
               "CallerIDName": row.cid_name}
        old = self.state.get(row.uniqueid)
        if old is not None:
            # BRIDGE_* rows leave the extension empty: not a move in the dialplan.
            for key in ("Context", "Exten"):
                new[key] = new[key] or old[key]
        self.state[row.uniqueid] = new
        if old is None:
            self.alive[row.uniqueid] = len(self.alive)
            self.emit("Newchannel", {**new, "ChannelState": "0"})
            self._dialled_now(row)
        elif old != new:
            self.emit("NewCallerid", new)

    # --- dials -------------------------------------------------------------------------------

    def _caller_for(self, uid: str, app: str) -> str | None:
        """Who dialled a new channel: the latest live APP_START of that application; without
        APP_START rows, the latest live channel whose rows show it ran it; else the call's
        first live channel."""
        for dialer in reversed(self.dialers):
            if dialer in self.alive and dialer != uid and app in self.facts[dialer].apps:
                return dialer
        order = sorted(self.alive, key=self.alive.__getitem__, reverse=True)
        for other in order:
            if other != uid and app in self.facts[other].apps:
                return other
        for other in sorted(self.alive, key=self.alive.__getitem__):
            if other != uid:
                return other
        return None

    def _dialled_now(self, row: CelRow) -> None:
        uid = row.uniqueid
        if _half(row.channame) == "2":
            return  # the other half of a Local pair Dial rang: one leg with its ;1
        kind = self.facts[uid].kind
        if kind is None:
            return
        if kind == "originate":
            self.dialled[uid] = None
            self.ringing.add(uid)
            self.emit("DialBegin", self.snap(uid, "Dest"))
            return
        caller = self._caller_for(uid, "Queue" if kind == "queue" else "Dial")
        if caller is None:
            return
        self.dialled[uid] = caller
        self.ringing.add(uid)
        if kind == "queue":
            self._join_queue(caller)
            self.emit("AgentCalled", {**self.snap(caller), **self.snap(uid, "Dest"),
                                      "Queue": self._queue_name(caller)})
        else:
            self.emit("DialBegin", {**self._dialling(caller), **self.snap(uid, "Dest")})

    def _dialling(self, caller: str) -> dict[str, str]:
        """The caller as it was when it ran Dial. Without its APP_START row (the position it
        dialled from), its next row that shows it in Dial tells where that was."""
        headers = self.snap(caller)
        if caller in self.dialers:
            return headers
        for number, context, exten in self.facts[caller].dialling_at:
            if number > self.number:
                headers.update(Context=context, Exten=exten)
                break
        return headers

    def _queue_name(self, caller: str) -> str:
        return self.facts[caller].queue_data.split(",", 1)[0]

    def _join_queue(self, caller: str) -> None:
        if caller not in self.queued:
            self.queued.add(caller)
            self.emit("QueueCallerJoin", {**self.snap(caller), "Queue": self._queue_name(caller)})

    def _end_dial(self, dest: str, status: str) -> None:
        self.ringing.discard(dest)
        caller = self.dialled.get(dest)
        if caller is None:
            self.emit("DialEnd", {**self.snap(dest, "Dest"), "DialStatus": status})
        elif self.facts[dest].kind == "queue":
            if status == "ANSWER":
                self.connected.add(caller)
                self.emit("AgentConnect", {**self.snap(caller), **self.snap(dest, "Dest"),
                                           "Queue": self._queue_name(caller)})
        else:
            self.emit("DialEnd", {**self.snap(caller), **self.snap(dest, "Dest"), "DialStatus": status})

    def _unanswered_status(self, dest: str, cause: int | None) -> str:
        by_cause = CAUSE_DIAL_STATUS.get(cause if cause is not None else -1)
        if by_cause is not None:
            return by_cause
        caller = self.dialled.get(dest)
        said = self.facts[caller].dialstatus if caller is not None else ""
        if said == "ANSWER":
            return "CANCEL"  # another phone of the same Dial answered
        return said or "NOANSWER"

    # --- rows ----------------------------------------------------------------------------

    def row(self, row: CelRow) -> None:
        self.now = row.eventtime
        kind = row.eventtype
        uid = row.uniqueid
        if kind == "LINKEDID_END":
            self.emit("CEL", {"EventName": "LINKEDID_END", "LinkedID": row.linkedid,
                              "UniqueID": uid, "Channel": row.channame})
            return
        if kind == "CHAN_END":
            return
        if uid not in self.state and kind == "HANGUP":
            return  # a channel we never saw alive: nothing to tell
        self._observe(row)
        if kind == "ANSWER":
            self.emit("Newstate", {**self.snap(uid), "ChannelState": "6"})
            if uid in self.ringing:
                self._end_dial(uid, "ANSWER")
        elif kind == "APP_START":
            if row.appname == "Dial":
                self.dialers.append(uid)
            elif row.appname == "Queue":
                self.dialers.append(uid)
                self.facts[uid].queue_data = row.appdata
                self._join_queue(uid)
        elif kind in ("BRIDGE_ENTER", "BRIDGE_EXIT"):
            bridge = str(row.extra_json().get("bridge_id") or "")
            if bridge:
                name = "BridgeEnter" if kind == "BRIDGE_ENTER" else "BridgeLeave"
                self.emit(name, {**self.snap(uid), "BridgeUniqueid": bridge})
        elif kind == "HANGUP":
            self._hangup(row)
        elif kind == "PICKUP":
            picker = str(row.extra_json().get("pickup_channel_uniqueid") or "")
            if picker:
                self.emit("Pickup", {**self._named(picker, row.extra_json().get("pickup_channel")),
                                     **self.snap(uid, "Target")})
        elif kind == "ATTENDEDTRANSFER":
            self._attended(row)
        elif kind == "BLINDTRANSFER":
            self._blind(row)
        elif kind == "USER_DEFINED" and row.userdeftype.upper() in USER_VARIABLES:
            value = row.extra_json().get("extra", row.extra)
            self.emit("VarSet", {**self.snap(uid), "Variable": row.userdeftype.upper(),
                                 "Value": str(value)})

    def _named(self, uid: str, name: object, prefix: str = "") -> dict[str, str]:
        headers = self.snap(uid, prefix)
        if prefix + "Channel" not in headers and name:
            headers[prefix + "Channel"] = str(name)
        return headers

    def _hangup(self, row: CelRow) -> None:
        uid = row.uniqueid
        extra = row.extra_json()
        cause = _int(extra.get("hangupcause"))
        if uid in self.ringing:
            self._end_dial(uid, self._unanswered_status(uid, cause))
        # Phones it was still ringing when it left (the caller gave up first).
        for dest in [d for d in self.ringing if self.dialled.get(d) == uid]:
            status = self.facts[uid].dialstatus
            self._end_dial(dest, "CANCEL" if status in ("", "ANSWER") else status)
        if uid in self.queued and uid not in self.connected:
            if self.facts[uid].hangupsource == row.channame:
                self.emit("QueueCallerAbandon", {**self.snap(uid), "Queue": self._queue_name(uid)})
            self.emit("QueueCallerLeave", {**self.snap(uid), "Queue": self._queue_name(uid)})
        headers = self.snap(uid)
        if cause is not None:
            headers["Cause"] = str(cause)
            if cause in CAUSE_TEXT:
                headers["Cause-txt"] = CAUSE_TEXT[cause]
        self.emit("Hangup", headers)
        self.alive.pop(uid, None)

    def _attended(self, row: CelRow) -> None:
        extra = row.extra_json()
        headers = {"Result": "Success", **self.snap(row.uniqueid, "OrigTransferer")}
        for key, prefix in (("channel2", "SecondTransferer"), ("transferee_channel", "Transferee"),
                            ("transfer_target_channel", "TransferTarget")):
            uid = str(extra.get(f"{key}_uniqueid") or "")
            if uid:
                headers.update(self._named(uid, extra.get(f"{key}_name"), prefix))
        self.emit("AttendedTransfer", headers)

    def _blind(self, row: CelRow) -> None:
        extra = row.extra_json()
        headers = {"Result": "Success", **self.snap(row.uniqueid, "Transferer"),
                   "Extension": str(extra.get("extension") or ""),
                   "Context": str(extra.get("context") or "")}
        uid = str(extra.get("transferee_channel_uniqueid") or "")
        if uid:
            headers.update(self._named(uid, extra.get("transferee_channel_name"), "Transferee"))
        self.emit("BlindTransfer", headers)


def events_from_rows(rows: Sequence[CelRow], pbx: str) -> list[AmiEvent]:
    """The CEL rows of one call (pbx_bridge.cel.grouping.group_calls) -> AMI events, in order."""
    replay = _Replay(sorted(rows, key=lambda r: (r.eventtime, r.id)), pbx)
    for number, row in enumerate(replay.rows):
        replay.number = number
        replay.row(row)
    return replay.events
