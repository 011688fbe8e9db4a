"""Real traces turned into call templates that render fresh calls fast.

Each broadcast event of a trace becomes a `str.format_map` template in which every value that
differs between calls is a named slot: channel Uniqueids/Linkedids and bridge ids (`u0`...), Local
channel instance numbers (`x0`...), the customer's number in each of its written forms and the
customer's name, operators' extensions (`op0`...), the CALL_ID variable, the `Timestamp` of each
event (`t0`...) and the CDR/CEL date-times (`d0`...). Everything else is Asterisk's own bytes.

Rendering a call is then one dict of fresh values and one `format_map` per event, which is what
lets the generator produce well over 20,000 events/s.

The channel table after every event is precomputed too (with slots unfilled), so
`CoreShowChannels` can describe a call in progress without the generator tracking state per event.
"""

from __future__ import annotations

import calendar
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from pbx_bridge.simulator.channels import Channel, ChannelTable
from pbx_bridge.simulator.trace import Frame, parse_headers, read_trace

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_SEQ_ID = re.compile(r"^(?:[\w-]+-)?\d{9,11}\.\d+$")
_INSTANCE = re.compile(r"(?<=-)[0-9a-f]{8}(?=;[12])")
# The sequence number in a SIP channel's name: PJSIP/101-00000088.
_SIP_INSTANCE = re.compile(r"\b(?:PJSIP|SIP)/\w+-([0-9a-f]{8})\b")
_DATETIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
_OPERATOR_CHANNEL = re.compile(r"Local/(\d+)@(?:operators|op-phone)\b|\b(?:PJSIP|SIP)/(\d{2,6})-")
_PSTN_CHANNEL = re.compile(r"Local/(\d{5,})@pstn-")
_SLOT = re.compile(r"\{(\w+)\}")
# Actions of the trace's client that drive the call (a transfer, a hang-up): the call waits for
# them, or (generated traffic) goes on when the trace did, as if the phone had done it.
DRIVING_ACTIONS = frozenset({"atxfer", "blindtransfer", "redirect", "hangup"})


def broadcast_events(frames: list[Frame]) -> list[Frame]:
    """Events every AMI session sees: not the answers to the recording client's own actions
    (list events carrying its ActionID) nor the FullyBooted sent at its login."""
    out = []
    for frame in frames:
        if frame.kind != "event" or frame.name == "FullyBooted":
            continue
        if frame.get("ActionID") and frame.name != "OriginateResponse":
            continue
        out.append(frame)
    return out


def driving_actions(frames: list[Frame]) -> list[tuple[int, list[tuple[str, str]]]]:
    """(index of the first broadcast event after it, the action's headers) for each action of the
    trace's client that drove the call in the middle of it."""
    out: list[tuple[int, list[tuple[str, str]]]] = []
    seen = 0
    events = broadcast_events(frames)
    wanted = {id(f) for f in events}
    for frame in frames:
        if id(frame) in wanted:
            seen += 1
        elif frame.kind == "action" and frame.name.lower() in DRIVING_ACTIONS and 0 < seen < len(events):
            out.append((seen, [(k, v) for k, v in frame.headers if k != "ActionID"]))
    return out


@dataclass
class EventTemplate:
    name: str
    offset: float  # seconds after the call's first event
    fmt: str  # str.format_map template of the whole message, ending with the blank line
    ts_slot: str | None = None  # the slot of its Timestamp value


@dataclass(frozen=True)
class Pause:
    """Where the call waits for its client's action: before event `index`, for `action` on the
    channel `channel` (template text with slots), with the trace's other headers."""

    index: int
    action: str
    channel: str
    fields: tuple[tuple[str, str], ...]


@dataclass
class CallTemplate:
    name: str
    events: list[EventTemplate]
    # slot -> (kind, original value); kinds: uid, instance, customer, name, operator, call_id,
    # action_id
    slots: dict[str, tuple[str, str]]
    timestamp_slots: list[tuple[str, float]]  # (slot, offset)
    datetime_slots: list[tuple[str, float]]
    operators: list[str]  # original extensions, in slot order op0, op1...
    customer: str  # original customer number ("" for internal calls)
    # Channel table after event i (slot names in values); shared objects where unchanged.
    states: list[dict[str, Channel]] = field(default_factory=list)
    hangup_index: int = -1
    pauses: list[Pause] = field(default_factory=list)
    literals: dict[str, str] = field(default_factory=dict)  # original value -> slot

    @property
    def duration(self) -> float:
        return self.events[-1].offset if self.events else 0.0

    @property
    def offsets(self) -> list[float]:
        return [e.offset for e in self.events]


def _escape(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def build_template(path: Path | str, name: str | None = None) -> CallTemplate:
    frames = read_trace(path)
    return build_template_from_frames(broadcast_events(frames), name or Path(path).stem,
                                      actions=driving_actions(frames))


def _customer_of(frame: Frame) -> tuple[str, str] | None:
    """The customer's number and name, if this event is about the customer's own channel: the
    lab's `Local/cust@customer`, or a channel that began in an inbound context (the trunk)."""
    channel = frame.get("Channel")
    number = frame.get("CallerIDNum")
    if not number.lstrip("+").isdigit():
        return None
    if channel.startswith("Local/cust@customer") or (
            frame.name == "Newchannel" and frame.get("Context") == "from-trunk"):
        name = frame.get("CallerIDName")
        return number, "" if name in ("", "<unknown>") else name
    return None


def build_template_from_frames(frames: list[Frame], name: str, *,
                               actions: list[tuple[int, list[tuple[str, str]]]] | None = None,
                               base: CallTemplate | None = None) -> CallTemplate:
    """`actions`: the client's driving actions (see driving_actions), which become pauses.
    `base`: a template whose slots this one keeps (a variant of the same call, e.g. the blind
    transfer of the attended-transfer trace), so a call can switch between the two mid-way."""
    if not frames:
        raise ValueError(f"{name}: no events")
    t0 = next((f.timestamp for f in frames if f.timestamp is not None), 0.0) or 0.0

    uids: set[str] = set()
    instances: set[str] = set()
    operators: list[str] = list(base.operators) if base else []
    customer = base.customer if base else ""
    customer_name = next((orig for kind, orig in base.slots.values() if kind == "name"), "") \
        if base else ""
    call_ids: set[str] = set()
    for frame in frames:
        for key, value in frame.headers:
            low = key.lower()
            if low.endswith(("uniqueid", "linkedid")) or key in ("BridgeId",):
                base_id = value.split(";")[0]
                if _UUID.match(base_id) or _SEQ_ID.match(base_id):
                    uids.add(base_id)
            instances.update(_INSTANCE.findall(value))
            instances.update(_SIP_INSTANCE.findall(value))
            for local_ext, sip_ext in _OPERATOR_CHANNEL.findall(value):
                ext = local_ext or sip_ext
                if ext not in operators:
                    operators.append(ext)
            if key == "ChanVariable" and value.startswith("CALL_ID=") and len(value) > 8:
                call_ids.add(value[8:])
        if not customer:
            found_customer = _customer_of(frame)
            if found_customer:
                customer, customer_name = found_customer
        if not customer:
            found = _PSTN_CHANNEL.search(frame.get("Channel"))
            if found:
                customer = found.group(1)

    slots: dict[str, tuple[str, str]] = dict(base.slots) if base else {}
    literal_to_slot: dict[str, str] = dict(base.literals) if base else {}

    def add(kind: str, prefix: str, values: list[str]) -> None:
        taken = sum(1 for slot in slots if re.fullmatch(prefix + r"\d+", slot))
        for value in values:
            if value in literal_to_slot:
                continue
            slot = f"{prefix}{taken}"
            taken += 1
            slots[slot] = (kind, value)
            literal_to_slot[value] = slot

    add("uid", "u", sorted(uids))
    add("instance", "x", sorted(instances))
    add("operator", "op", operators)
    add("call_id", "cid", sorted(call_ids))
    if customer and not base:
        forms = {customer}
        digits = customer.lstrip("+")
        if customer.startswith("+7"):
            forms |= {digits, "8" + digits[1:]}
        elif customer.startswith("8"):
            forms |= {"7" + customer[1:], "+7" + customer[1:]}
        for i, form in enumerate(sorted(forms, key=len, reverse=True)):
            slots[f"cust{i}"] = ("customer", form)
            literal_to_slot[form] = f"cust{i}"
    if customer_name and not base:
        slots["cname"] = ("name", customer_name)
        literal_to_slot[customer_name] = "cname"

    alternatives = sorted(literal_to_slot, key=len, reverse=True)
    token_re = re.compile(
        r"(?<![\w.+])(" + "|".join(re.escape(a) for a in alternatives) + r")(?![\w])"
    ) if alternatives else None

    timestamp_slots: list[tuple[str, float]] = []
    datetime_slots: list[tuple[str, float]] = list(base.datetime_slots) if base else []
    datetime_offsets: dict[str, str] = {}

    def templated(line: str) -> str:
        pieces: list[str] = []
        pos = 0
        spans: list[tuple[int, int, str]] = []
        if token_re is not None:
            spans += [(m.start(), m.end(), literal_to_slot[m.group(1)])
                      for m in token_re.finditer(line)]
        for m in _DATETIME.finditer(line):
            stamp = m.group(0)
            if stamp not in datetime_offsets:
                when = calendar.timegm(time.strptime(stamp, "%Y-%m-%d %H:%M:%S"))
                slot = f"d{len(datetime_slots)}"
                datetime_slots.append((slot, when - t0))
                datetime_offsets[stamp] = slot
            spans.append((m.start(), m.end(), datetime_offsets[stamp]))
        for start, end, slot in sorted(spans):
            if start < pos:
                continue
            pieces.append(_escape(line[pos:start]))
            pieces.append("{" + slot + "}")
            pos = end
        pieces.append(_escape(line[pos:]))
        return "".join(pieces)

    events: list[EventTemplate] = []
    hangup_index = -1
    for frame in frames:
        text = frame.raw.decode("utf-8")
        offset = (frame.timestamp - t0) if frame.timestamp is not None else 0.0
        out_lines = []
        ts_slot = None
        for line in text.split("\r\n"):
            if line.startswith("Timestamp: "):
                slot = ts_slot = f"t{len(timestamp_slots)}"
                timestamp_slots.append((slot, offset))
                out_lines.append("Timestamp: {" + slot + "}")
                continue
            if line.startswith("ActionID: ") and frame.name == "OriginateResponse":
                slots["aid"] = ("action_id", line[10:])
                out_lines.append("{aid_line}")
                continue
            out_lines.append(templated(line))
        # "{aid_line}" stands for a whole line (or nothing): join without its own line end.
        fmt = "\r\n".join(out_lines).replace("{aid_line}\r\n", "{aid_line}")
        events.append(EventTemplate(frame.name, offset, fmt, ts_slot))

    pauses = [Pause(index, next((v for k, v in headers if k == "Action"), ""),
                    templated(next((v for k, v in headers if k == "Channel"), "")),
                    tuple((k, templated(v)) for k, v in headers if k not in ("Action", "Channel")))
              for index, headers in actions or []]
    # A Hangup action on a live call jumps to where the call hangs up. After a transfer, that is
    # where its last phase hangs up a real channel (the Local pair of the transfer goes earlier).
    after = pauses[-1].index if pauses else 0
    for index, event in enumerate(events[after:], after):
        if event.name in ("SoftHangupRequest", "HangupRequest") and not (
                pauses and "\r\nChannel: Local/" in event.fmt):
            hangup_index = index
            break

    template = CallTemplate(
        name=name, events=events, slots=slots,
        timestamp_slots=timestamp_slots, datetime_slots=datetime_slots,
        operators=operators, customer=customer, hangup_index=hangup_index, pauses=pauses,
        literals=literal_to_slot,
    )
    table = ChannelTable()
    for event in events:
        pairs = parse_headers(event.fmt.replace("{aid_line}", "").encode("utf-8"))
        if table.apply(pairs, event.offset) or not template.states:
            template.states.append(table.snapshot())
        else:
            template.states.append(template.states[-1])
    return template


def unescape_slots(text: str, values: dict[str, str]) -> str:
    """A template value (with {slot}s and doubled braces) filled in."""
    return text.format_map(values)


def fresh_uid(original: str, system_name: str, counter: int, now: float) -> str:
    if _UUID.match(original):
        return str(uuid.uuid4())
    prefix = original.rsplit("-", 1)[0] + "-" if "-" in original else ""
    if system_name:
        prefix = system_name + "-"
    return f"{prefix}{int(now)}.{counter}"


def slot_names(fmt: str) -> set[str]:
    return set(_SLOT.findall(fmt))
