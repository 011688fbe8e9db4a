"""An AMI event as plain data: what the reader hands to the queue and what the tracker reads."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class AmiEvent:
    pbx: str
    name: str  # the `Event:` header, e.g. "Newchannel"
    headers: dict[str, str]  # every other header, last value wins
    # `ChanVariable: NAME=value` lines, one per variable in manager.conf `channelvars`.
    variables: dict[str, str] = field(default_factory=dict)
    # Wall-clock epoch seconds when the bridge read it; used where `Timestamp` is absent.
    received_at: float = 0.0
    # Its number in the PBX's journal (pbx_bridge.ami.journal); 0 = not journaled.
    seq: int = 0

    @property
    def timestamp(self) -> float:
        """Event time: Asterisk's `Timestamp` (timestampevents=yes), else arrival time."""
        raw = self.headers.get("Timestamp")
        if raw:
            try:
                return float(raw)
            except ValueError:
                pass
        return self.received_at

    def get(self, key: str, default: str = "") -> str:
        return self.headers.get(key, default)


# --- control items the connection puts in the same queue, in order with the events ----------


@dataclass(slots=True)
class ConnectionUp:
    """Logged in (first time or after a reconnect); a ChannelsSnapshot follows."""

    pbx: str
    at: float


@dataclass(slots=True)
class ConnectionLost:
    pbx: str
    at: float
    reason: str


@dataclass(slots=True)
class ChannelsSnapshot:
    """The answer to CoreShowChannels after a (re)login: one CoreShowChannel event per live
    channel. Calls the bridge thought live that are not in it ended during the outage."""

    pbx: str
    at: float
    channels: list[AmiEvent]


# What a PBX connection puts on the call pipeline's queue (which also takes the CEL's calls:
# pbx_bridge.calls.queue.QueueItem).
AmiItem = AmiEvent | ConnectionUp | ConnectionLost | ChannelsSnapshot
