"""What the call tracker holds: its settings, one `Call` per Linkedid with its `Channel`s and
legs (`LegState`), and `TrackerState`, the maps every handler of pbx_bridge.calls.tracking reads
and changes. No call logic here: only the objects and the small helpers the maps need."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pbx_bridge.calls.changes import CallChange
from pbx_bridge.calls.record import CallRecord, Leg, Transfer

# How many ended linkedids / hung-up uniqueids to remember so late duplicates do not resurrect
# a call; a few minutes of a busy PBX.
ENDED_MEMORY = 20_000
NORMALIZE_CACHE = 50_000
MAX_FIELD = 255  # values longer than this are junk for every field we keep


@dataclass
class TrackerSettings:
    pbx: str
    operator_channel: re.Pattern[str]  # named group `ext`
    inbound_contexts: frozenset[str]
    default_region: str = "RU"
    max_extension_length: int = 5


class Prefix:
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


P = Prefix("")  # the event's own channel
DEST = Prefix("Dest")
TARGET = Prefix("Target")
TRANSFERER = Prefix("Transferer")
TRANSFEREE = Prefix("Transferee")
ORIG_TRANSFERER = Prefix("OrigTransferer")
SECOND_TRANSFERER = Prefix("SecondTransferer")
TRANSFER_TARGET = Prefix("TransferTarget")


class LegState:
    __slots__ = ("leg", "live")

    def __init__(self, leg: Leg) -> None:
        self.leg = leg
        self.live: set[str] = set()


class Channel:
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

    def __init__(self, call: Call, uid: str, name: str, ext: str | None, leg: LegState) -> None:
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


class Call:
    def __init__(self, linkedid: str, ts: float) -> None:
        self.linkedid = linkedid
        self.started_at = ts
        self.last_ts = ts
        self.channels: dict[str, Channel] = {}
        self.live: set[str] = set()
        self.legs: dict[str, LegState] = {}
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


@dataclass(slots=True, eq=False)
class TrackerState:
    """One PBX's calls as the tracker follows them. `changes` collects what the current input
    (an event, a snapshot, a CEL batch) produced; `emitted` the calls that already reported
    something for it."""

    settings: TrackerSettings
    calls: dict[str, Call] = field(default_factory=dict)
    channels: dict[str, Channel] = field(default_factory=dict)
    ended: dict[str, None] = field(default_factory=dict)  # recently ended/merged linkedids
    gone: dict[str, None] = field(default_factory=dict)  # recently hung-up uniqueids
    alias: dict[str, str] = field(default_factory=dict)  # merged linkedid -> the call it joined
    norm_cache: dict[str, str | None] = field(default_factory=dict)
    op_cache: dict[str, str | None] = field(default_factory=dict)
    last_ts: float = 0.0
    changes: list[CallChange] = field(default_factory=list)
    emitted: set[int] = field(default_factory=set)  # id()s of calls that emitted this input
    # Calls waiting for their OriginateResponse (pbx_bridge.calls.tracking.originates): linkedid
    # -> the time their last channel hung up.
    pending_ends: dict[str, float] = field(default_factory=dict)
    # Recently ended during an outage: what AMI knew of them, for CEL to complete.
    outage_ended: dict[str, CallRecord] = field(default_factory=dict)

    def begin(self) -> list[CallChange]:
        """A new input: a fresh list for the changes it produces."""
        changes: list[CallChange] = []
        self.changes = changes
        self.emitted.clear()
        return changes


def leg_key(channel: str, uid: str) -> str:
    """The two halves of a Local channel (`;1`, `;2`) are one leg; any other channel is one."""
    return channel[:-2] if channel.startswith("Local/") and channel[-2:] in (";1", ";2") else uid


def valid_ts(ts: float) -> bool:
    return ts == ts and 0.0 < ts < 1e11  # not NaN, positive, before year 5138


def remember(memory: dict[str, None], key: str) -> None:
    memory[key] = None
    if len(memory) > ENDED_MEMORY:
        del memory[next(iter(memory))]
