"""Recorded AMI traces as the queue items the call pipeline consumes (for tests, benchmarks and
offline replays): events become AmiEvents; a `CoreShowChannels` answer becomes one
ChannelsSnapshot, as the connection hands it over after a (re)login."""

from __future__ import annotations

from pbx_bridge.ami.events import AmiEvent, ChannelsSnapshot
from pbx_bridge.calls.queue import QueueItem
from pbx_bridge.simulator.trace import Frame


def frame_to_event(frame: Frame, pbx: str, received_at: float = 0.0) -> AmiEvent:
    headers: dict[str, str] = {}
    variables: dict[str, str] = {}
    name = ""
    for key, value in frame.headers:
        if key == "Event":
            name = value
        elif key == "ChanVariable":
            var, _, val = value.partition("=")
            variables[var] = val
        else:
            headers[key] = value
    ev = AmiEvent(pbx=pbx, name=name, headers=headers, variables=variables,
                  received_at=received_at)
    if not received_at:
        ts = frame.timestamp
        ev.received_at = ts if ts is not None else 0.0
    return ev


def trace_items(frames: list[Frame], pbx: str) -> list[QueueItem]:
    """Events in order; each CoreShowChannels answer folded into one ChannelsSnapshot whose
    time is that of the last event before it (the trace does not time the answer)."""
    items: list[QueueItem] = []
    last_ts = 0.0
    snapshot: ChannelsSnapshot | None = None
    for frame in frames:
        if frame.kind != "event":
            continue
        ev = frame_to_event(frame, pbx)
        if frame.timestamp is not None:
            last_ts = frame.timestamp
        if ev.name == "CoreShowChannel":
            if snapshot is None:
                snapshot = ChannelsSnapshot(pbx=pbx, at=last_ts, channels=[])
            ev.received_at = last_ts
            snapshot.channels.append(ev)
            continue
        if ev.name == "CoreShowChannelsComplete":
            items.append(snapshot or ChannelsSnapshot(pbx=pbx, at=last_ts, channels=[]))
            snapshot = None
            continue
        if not ev.received_at:
            ev.received_at = last_ts
        items.append(ev)
    # A snapshot before any timed event (the client joined mid-call): time it by the next one.
    next_ts = 0.0
    for item in reversed(items):
        if isinstance(item, AmiEvent) and item.timestamp:
            next_ts = item.timestamp
        elif isinstance(item, ChannelsSnapshot) and not item.at:
            item.at = next_ts
            for ev in item.channels:
                ev.received_at = next_ts
    return items
