"""Who was bridged with whom, and when MixMonitor wrote, as Asterisk's events tell it.

A listener of the call pipeline (it sees every AMI event in order, before the batch's hooks run)
keeps, per call (PBX and Linkedid), the events that decide what a recording holds: BridgeEnter /
BridgeLeave, MusicOnHoldStart / Stop, Hangup, MixMonitor's start (the `MIXMONITOR_FILENAME`
VarSet, which names the file) and MixMonitorStop, each with Asterisk's `Timestamp`. When the
recorded call ends, the recordings service takes its history and derives:

- the call's timeline: when the customer's channel was bridged (directly, or through a Local
  channel pair such as an attended transfer's `Local/102@transfer-...;1/;2`) with someone and
  not hearing hold music, and with whom;
- each segment's recorded stretches: from its MixMonitor start to its stop or hang-up, and with
  option `b` only while its channel was in a bridge.

A channel whose Linkedid changes (a pickup, an attended transfer's other call) brings the
history of its old Linkedid with it. After a reconnect (`FullyBooted`) the calls then live may
have lost events: their history is marked, and their recordings are placed without it.
Histories of calls nobody records are dropped a while after the call ended.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from pbx_bridge.ami.events import AmiEvent
from recordings.mixmonitor import Segment
from recordings.timeline import CallTimeline, Window

ChangeKind = Literal["bridge", "moh", "hangup", "monitor_file", "monitor_start", "monitor_stop"]
_EVENTS = frozenset({"BridgeEnter", "BridgeLeave", "MusicOnHoldStart", "MusicOnHoldStop", "Hangup",
                     "MixMonitorStart", "MixMonitorStop", "VarSet"})
# Histories of calls nobody asked for are kept this long (Asterisk time) after their last channel
# hung up: the recordings stage of a call answered and ended in one batch asks afterwards.
KEEP_SECONDS = 120.0
# A watched call whose end never comes is dropped after this long (a leak guard).
WATCH_LIMIT_SECONDS = 86400.0


@dataclass(frozen=True)
class Change:
    at: float
    channel: str
    kind: ChangeKind
    value: str = ""  # bridge id ("" = left it), "1"/"" for hold music, the file's path


@dataclass
class CallHistory:
    linkedid: str
    first_seen: float
    changes: list[Change] = field(default_factory=list)
    live: set[str] = field(default_factory=set)  # channels not hung up yet
    ended_at: float | None = None
    gap: bool = False  # a reconnect while the call was live: events may be missing
    watched: bool = False


class BridgeFollower:
    def __init__(self, keep_seconds: float = KEEP_SECONDS) -> None:
        self.keep_seconds = keep_seconds
        self._calls: dict[tuple[str, str], CallHistory] = {}
        self._channel_call: dict[tuple[str, str], str] = {}  # (pbx, channel) -> Linkedid
        self._merged: dict[tuple[str, str], str] = {}  # (pbx, old Linkedid) -> the one it joined
        self._ended: deque[tuple[float, tuple[str, str]]] = deque()

    # --- the listener --------------------------------------------------------------------------

    async def on_event(self, event: AmiEvent) -> None:
        self.feed(event)

    def feed(self, event: AmiEvent) -> None:
        name = event.name
        if name == "FullyBooted":
            self._reconnected(event.pbx)
            return
        channel = event.headers.get("Channel")
        linkedid = event.headers.get("Linkedid")
        if not channel or not linkedid:
            return
        pbx = event.pbx
        key = (pbx, channel)
        known = self._channel_call.get(key)
        if known != linkedid:
            if name == "Hangup" and known is None:
                return
            self._join(pbx, channel, known, self._merged.get((pbx, linkedid), linkedid), event.timestamp)
        if name not in _EVENTS:
            return
        history = self._history(pbx, self._channel_call[key], event.timestamp)
        at = event.timestamp
        if name == "BridgeEnter":
            history.changes.append(Change(at, channel, "bridge", event.headers.get("BridgeUniqueid", "")))
        elif name == "BridgeLeave":
            history.changes.append(Change(at, channel, "bridge", ""))
        elif name == "MusicOnHoldStart":
            history.changes.append(Change(at, channel, "moh", "1"))
        elif name == "MusicOnHoldStop":
            history.changes.append(Change(at, channel, "moh", ""))
        elif name == "MixMonitorStart":
            history.changes.append(Change(at, channel, "monitor_start"))
        elif name == "MixMonitorStop":
            history.changes.append(Change(at, channel, "monitor_stop"))
        elif name == "VarSet":
            if event.headers.get("Variable") == "MIXMONITOR_FILENAME":
                history.changes.append(Change(at, channel, "monitor_file", event.headers.get("Value", "")))
        elif name == "Hangup":
            history.changes.append(Change(at, channel, "hangup"))
            history.live.discard(channel)
            del self._channel_call[key]
            if not history.live:
                history.ended_at = at
                self._ended.append((at, (pbx, history.linkedid)))
                self._purge(at)

    def _history(self, pbx: str, linkedid: str, at: float) -> CallHistory:
        history = self._calls.get((pbx, linkedid))
        if history is None:
            history = self._calls[(pbx, linkedid)] = CallHistory(linkedid, first_seen=at)
        return history

    def _join(self, pbx: str, channel: str, old: str | None, new: str, at: float) -> None:
        """A channel seen for the first time, or whose Linkedid changed: the history of its old
        Linkedid moves into the new one (a pickup, a merged call)."""
        target = self._history(pbx, new, at)
        target.live.add(channel)
        target.ended_at = None
        self._channel_call[(pbx, channel)] = new
        if old is None or old == new:
            return
        source = self._calls.pop((pbx, old), None)
        self._merged[(pbx, old)] = new
        if source is None:
            return
        target.changes = sorted([*target.changes, *source.changes], key=lambda c: c.at)
        target.first_seen = min(target.first_seen, source.first_seen)
        target.gap |= source.gap
        target.watched |= source.watched
        for other in source.live:
            target.live.add(other)
            self._channel_call[(pbx, other)] = new

    def _reconnected(self, pbx: str) -> None:
        """Events may have been lost: a recorded call's history is marked (its recording is then
        placed without it); the others are dropped (their hang-ups may never come)."""
        for key, history in list(self._calls.items()):
            if key[0] != pbx:
                continue
            if history.watched:
                history.gap = True
            else:
                del self._calls[key]
        self._channel_call = {k: v for k, v in self._channel_call.items()
                              if k[0] != pbx or (pbx, v) in self._calls}
        self._merged = {k: v for k, v in self._merged.items() if k[0] != pbx or (pbx, v) in self._calls}

    def _purge(self, now: float) -> None:
        while self._ended and self._ended[0][0] < now - self.keep_seconds:
            _at, key = self._ended.popleft()
            history = self._calls.get(key)
            if history is None or history.live:
                continue
            if history.watched and history.ended_at is not None and \
                    history.ended_at > now - WATCH_LIMIT_SECONDS:
                self._ended.append((now, key))  # asked for: kept until taken
                continue
            del self._calls[key]
            for old in [k for k, v in self._merged.items() if k[0] == key[0] and v == key[1]]:
                del self._merged[old]

    # --- what the recordings service asks ------------------------------------------------------

    def watch(self, pbx: str, linkedid: str) -> None:
        """Keep this call's history until it is taken (its recording has begun)."""
        linkedid = self._merged.get((pbx, linkedid), linkedid)
        history = self._calls.get((pbx, linkedid))
        if history is not None:
            history.watched = True

    def take(self, pbx: str, linkedid: str) -> CallHistory | None:
        """The call's history, forgotten here (its recording is done with it; a channel the
        events never hung up, gone during an outage, goes with it)."""
        linkedid = self._merged.get((pbx, linkedid), linkedid)
        history = self._calls.pop((pbx, linkedid), None)
        if history is not None:
            for channel in history.live:
                self._channel_call.pop((pbx, channel), None)
        return history

    def __len__(self) -> int:
        return len(self._calls)


# --- from a history to the recording's times --------------------------------------------------


def _partner(channel: str) -> str | None:
    if channel.startswith("Local/") and channel[-2:] in (";1", ";2"):
        return channel[:-1] + ("2" if channel.endswith("1") else "1")
    return None


def _company(customer: str, bridges: dict[str, str]) -> set[str]:
    """Every channel connected to the customer's: same bridge, or through a Local pair."""
    seen = {customer}
    todo = [customer]
    while todo:
        channel = todo.pop()
        bridge = bridges.get(channel, "")
        linked = [c for c, b in bridges.items() if bridge and b == bridge]
        partner = _partner(channel)
        if partner is not None and partner in bridges:
            linked.append(partner)
        for other in linked:
            if other not in seen:
                seen.add(other)
                todo.append(other)
    return seen


def windows(history: CallHistory, customer: str, start: float, end: float,
            operators: Iterable[str] = ()) -> tuple[Window, ...]:
    """When, between `start` and `end`, the customer was bridged with someone (not hearing hold
    music), and with whom: the operators' channels (`operators`, e.g. a lab phone that is a
    Local channel) and any other channel that is not a Local one (Local pairs only carry audio
    through, as an attended transfer's `Local/102@transfer-...` does)."""
    parties = set(operators)
    changes = [c for c in history.changes if c.kind in ("bridge", "moh", "hangup")]
    bridges: dict[str, str] = {}
    moh: set[str] = set()

    def apply(change: Change) -> None:
        if change.kind == "bridge":
            bridges[change.channel] = change.value
        elif change.kind == "moh":
            if change.value:
                moh.add(change.channel)
            else:
                moh.discard(change.channel)
        else:
            bridges.pop(change.channel, None)
            moh.discard(change.channel)

    def company() -> tuple[str, ...] | None:
        if customer in moh or not bridges.get(customer):
            return None
        others = tuple(sorted(c for c in _company(customer, bridges)
                              if c != customer and (c in parties or not c.startswith("Local/"))))
        return others or None

    i = 0
    while i < len(changes) and changes[i].at <= start:
        apply(changes[i])
        i += 1
    out: list[Window] = []
    current, since = company(), start
    while i < len(changes) and changes[i].at < end:
        moment = changes[i].at
        while i < len(changes) and changes[i].at == moment:
            apply(changes[i])
            i += 1
        new = company()
        if new != current:
            if current is not None and moment > since:
                out.append(Window(since, moment, current))
            current, since = new, moment
    if current is not None and end > since:
        out.append(Window(since, end, current))
    return tuple(out)


def _bridged(history: CallHistory, channel: str, since: float) -> list[tuple[float, float]]:
    """When the channel was in a bridge. A channel whose first bridge event the history does not
    have (the bridge began following mid-call, after a restart) counts as bridged from `since`
    (its MixMonitor's start: a channel is recorded once its call is answered)."""
    out: list[tuple[float, float]] = []
    entered: float | None = None
    mine = [c for c in history.changes if c.channel == channel and c.kind == "bridge"]
    if not mine or (mine[0].at > since and not mine[0].value):
        entered = since
    for change in history.changes:
        if change.channel != channel or change.kind not in ("bridge", "hangup"):
            continue
        if change.kind == "bridge" and change.value:
            if entered is None:
                entered = change.at
        elif entered is not None:
            out.append((entered, change.at))
            entered = None
    if entered is not None:
        out.append((entered, float("inf")))
    return out


def segment_times(history: CallHistory, segment: Segment, spool_names: Iterable[str],
                  ended_at: float) -> Segment:
    """The segment with Asterisk's start time and the stretches its file holds (option b: only
    while its channel was bridged). Unchanged when the history has no start for it."""
    names = set(spool_names)
    mine = [c for c in history.changes if c.channel == segment.channel]
    start = next((c.at for c in mine if c.kind == "monitor_file"
                  and c.value.rsplit("/", 1)[-1] in names), None)
    if start is None:
        return segment
    stop = next((c.at for c in mine if c.at >= start and c.kind in ("monitor_stop", "hangup")),
                ended_at)
    stretches = [(max(a, start), min(b, stop)) for a, b in _bridged(history, segment.channel, start)
                 if min(b, stop) > max(a, start)]
    return Segment(segment.index, segment.mode, segment.channel, segment.operator, segment.files,
                   start, segment.perspective, tuple(stretches))


def call_timeline(history: CallHistory | None, customer: str | None, answered_at: float,
                  ended_at: float, operators: Iterable[str] = ()) -> CallTimeline:
    """The call's timeline; its windows only when the history saw the whole call."""
    complete = (history is not None and not history.gap and customer is not None
                and history.first_seen <= answered_at)
    return CallTimeline(answered_at, ended_at, customer,
                        windows(history, customer, answered_at, ended_at, operators)
                        if complete and history is not None and customer is not None else None)
