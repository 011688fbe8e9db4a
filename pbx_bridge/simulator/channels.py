"""The simulated PBX's live channels, kept from the events it sends, for `CoreShowChannels`.

Fed with the same header lists that go on the wire, so what CoreShowChannels reports is exactly
what the events said: a channel exists from `Newchannel` to `Hangup`, takes every snapshot field
of each event about it (also the `Dest...` fields of Dial events), its application from
`Newexten` and its bridge from `BridgeEnter`/`BridgeLeave`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from pbx_bridge.simulator.media import ChannelState

# Snapshot fields, in the order Asterisk writes them in CoreShowChannel.
SNAPSHOT_FIELDS = (
    "Channel", "ChannelState", "ChannelStateDesc", "CallerIDNum", "CallerIDName",
    "ConnectedLineNum", "ConnectedLineName", "Language", "AccountCode", "Context", "Exten",
    "Priority", "Uniqueid", "Linkedid",
)
_SNAPSHOT_SET = frozenset(SNAPSHOT_FIELDS)


@dataclass
class Channel:
    fields: dict[str, str]
    variables: list[str] = field(default_factory=list)  # `NAME=value` as in ChanVariable lines
    application: str = ""
    application_data: str = ""
    bridge_id: str = ""
    created: float = 0.0  # epoch seconds (or an offset, for templates)
    moh: bool = False  # hearing hold music (MusicOnHoldStart .. MusicOnHoldStop)

    def copy(self) -> Channel:
        return Channel(dict(self.fields), list(self.variables), self.application,
                       self.application_data, self.bridge_id, self.created, self.moh)


# How long a replay's audio history is kept (Asterisk time): recordings longer than this lose
# their beginning. Replays run in tests and demos; a loop must not grow memory without bound.
HISTORY_SECONDS = 3600.0


class ChannelTable:
    def __init__(self, *, keep_history: bool = False) -> None:
        self.channels: dict[str, Channel] = {}
        # (Asterisk time, every channel's audio state from then on) at each change of a bridge,
        # hold music or the set of channels: what MixMonitor needs to know who heard whom.
        self.history: list[tuple[float, dict[str, ChannelState]]] | None = [] if keep_history else None

    def apply(self, pairs: list[tuple[str, str]], at: float, stamp: float | None = None) -> bool:
        """Update from one event; True when something changed. `at`: when channels it creates
        were created (CoreShowChannel's Duration); `stamp`: the event's Asterisk time, for the
        audio history (default `at`)."""
        name = next((v for k, v in pairs if k == "Event"), "")
        changed = False
        for prefix in ("", "Dest"):
            uid = next((v for k, v in pairs if k == prefix + "Uniqueid"), None)
            if uid is None:
                continue
            changed |= self._apply_one(name if not prefix else "", pairs, prefix, uid, at)
        if changed and self.history is not None and name in _AUDIO_EVENTS:
            when = at if stamp is None else stamp
            self.history.append((when, audio_states(self.channels)))
            while self.history and self.history[0][0] < when - HISTORY_SECONDS:
                self.history.pop(0)
        return changed

    def _apply_one(self, name: str, pairs: list[tuple[str, str]], prefix: str, uid: str,
                   at: float) -> bool:
        if name == "Hangup":
            return self.channels.pop(uid, None) is not None
        channel = self.channels.get(uid)
        if channel is None:
            if name != "Newchannel":
                return False
            channel = self.channels[uid] = Channel(fields={}, created=at)
        plen = len(prefix)
        variables: list[str] = []
        var_key = prefix + "ChanVariable"
        for key, value in pairs:
            if prefix and not key.startswith(prefix):
                continue
            bare = key[plen:]
            if bare in _SNAPSHOT_SET:
                channel.fields[bare] = value
            elif key == var_key:
                variables.append(value)
        if variables:
            channel.variables = variables
        if name == "Newexten":
            channel.application = next((v for k, v in pairs if k == "Application"), "")
            channel.application_data = next((v for k, v in pairs if k == "AppData"), "")
        elif name == "BridgeEnter":
            channel.bridge_id = next((v for k, v in pairs if k == "BridgeUniqueid"), "")
        elif name == "BridgeLeave":
            channel.bridge_id = ""
        elif name == "MusicOnHoldStart":
            channel.moh = True
        elif name == "MusicOnHoldStop":
            channel.moh = False
        return True

    def seed(self, pairs: list[tuple[str, str]], now: float) -> None:
        """A channel from a CoreShowChannel event (a trace that starts mid-call)."""
        get = dict(pairs).get
        uid = get("Uniqueid", "")
        if not uid:
            return
        channel = Channel(fields={k: get(k, "") for k in SNAPSHOT_FIELDS},
                          variables=[v for k, v in pairs if k == "ChanVariable"],
                          application=get("Application", ""),
                          application_data=get("ApplicationData", ""),
                          bridge_id=get("BridgeId", ""),
                          created=now - parse_duration(get("Duration", "")))
        self.channels[uid] = channel

    def snapshot(self) -> dict[str, Channel]:
        return {uid: ch.copy() for uid, ch in self.channels.items()}


_AUDIO_EVENTS = frozenset({"Newchannel", "Hangup", "BridgeEnter", "BridgeLeave", "MusicOnHoldStart",
                           "MusicOnHoldStop"})


def audio_states(channels: Mapping[str, Channel], render: Callable[[str], str] = str,
                 ) -> dict[str, ChannelState]:
    """Channel name -> what matters for audio (its bridge, hold music)."""
    return {render(ch.fields.get("Channel", "")): ChannelState(render(ch.bridge_id), ch.moh)
            for ch in channels.values()}


def parse_duration(text: str) -> float:
    try:
        h, m, s = (int(x) for x in text.split(":"))
    except ValueError:
        return 0.0
    return float(h * 3600 + m * 60 + s)


def format_duration(seconds: float) -> str:
    total = max(0, int(seconds))
    return f"{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}"


def core_show_channel(channel: Channel, action_id: str, now: float,
                      render: Callable[[str], str] = str) -> str:
    """One `CoreShowChannel` event, field for field as Asterisk 22 writes it."""
    lines = ["Event: CoreShowChannel"]
    if action_id:
        lines.append(f"ActionID: {action_id}")
    for key in SNAPSHOT_FIELDS:
        lines.append(f"{key}: {render(channel.fields.get(key, ''))}")
    lines.extend(f"ChanVariable: {render(v)}" for v in channel.variables)
    lines.append(f"Application: {render(channel.application)}")
    lines.append(f"ApplicationData: {render(channel.application_data)}")
    lines.append(f"Duration: {format_duration(now - channel.created)}")
    lines.append(f"BridgeId: {render(channel.bridge_id)}")
    return "\r\n".join(lines) + "\r\n\r\n"


def core_show_channels_complete(action_id: str, count: int) -> str:
    aid = f"ActionID: {action_id}\r\n" if action_id else ""
    return f"Event: CoreShowChannelsComplete\r\n{aid}EventList: Complete\r\nListItems: {count}\r\n\r\n"


def live_channel_names(tables: Iterable[dict[str, Channel]]) -> set[str]:
    return {ch.fields.get("Channel", "") for table in tables for ch in table.values()}
