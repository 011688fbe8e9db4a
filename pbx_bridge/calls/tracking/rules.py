"""The status and direction rules, and the `CallRecord` they produce from a tracked call.

- direction: the `DIRECTION` channel variable when the dialplan sets it; otherwise from the
  channel that started the call (Uniqueid == Linkedid): an operator's channel (configured
  pattern) started an outbound call, or an internal one when it dialled an extension or an
  operator; a channel that ran in an inbound context started an inbound call. Never from the
  context of any other channel: on a SIP trunk the outbound leg runs in `from-trunk` too.
- status once ended: answered; else `QueueCallerAbandon` -> abandoned; an Originate whose
  first party never came up -> no_answer (rang out), busy, or failed (OriginateResponse Reason);
  else the last Dial's status: NOANSWER -> no_answer, BUSY -> busy, CANCEL (the caller
  gave up while it rang) -> abandoned, CHANUNAVAIL/CONGESTION -> failed; a queue left without
  abandon -> no_answer; no Dial at all -> abandoned (inbound) or failed.
- the parties: the customer's number (E.164, or the digits of a caller ID the phone library
  rejects), name, the DID it called and what an operator dialled.
"""

from __future__ import annotations

import re

from crm_sync.phones import is_extension, normalize
from pbx_bridge.calls.record import CallRecord, Direction, Leg, Status
from pbx_bridge.calls.tracking.state import NORMALIZE_CACHE, Call, Channel, TrackerState

DIALLED = re.compile(r"\+?[0-9*#]{1,40}")
# A caller ID that is a phone number in some format: digits and separators, up to 20 digits.
_PHONE_LIKE = re.compile(r"\+?[0-9][0-9 ().\-]{0,30}")
VALID_DIRECTIONS: frozenset[str] = frozenset({"inbound", "outbound", "internal"})
UNKNOWN_NAMES = frozenset({"", "<unknown>", "unknown", "anonymous", "Anonymous"})
# What a call whose Originate failed then was (pbx_bridge.calls.tracking.originates maps the
# OriginateResponse Reason to these); any other failure: "failed".
_ORIGINATE_OUTCOME: dict[str, Status] = {"NOANSWER": "no_answer", "BUSY": "busy"}


def norm(st: TrackerState, raw: str | None) -> str | None:
    if not raw:
        return None
    try:
        return st.norm_cache[raw]
    except KeyError:
        pass
    s = st.settings
    try:
        value = normalize(raw, s.default_region, s.max_extension_length)
    except Exception:
        value = None
    if len(st.norm_cache) > NORMALIZE_CACHE:
        st.norm_cache.clear()
    st.norm_cache[raw] = value
    return value


def number(st: TrackerState, raw: str | None) -> str | None:
    """A party's number for the record: E.164 when it parses; a caller ID the phone library
    rejects (an unassigned range, a format it does not know) is still who called, kept as
    its digits (with its "+"), never dropped."""
    found = norm(st, raw)
    if found is not None or not raw:
        return found
    text = raw.strip()
    if text in UNKNOWN_NAMES or not _PHONE_LIKE.fullmatch(text):
        return None
    digits = "".join(ch for ch in text if ch.isdigit())
    if len(digits) <= st.settings.max_extension_length:
        return None
    return ("+" if text.startswith("+") else "") + digits


def direction(st: TrackerState, call: Call) -> Direction:
    if call.direction_var is not None:
        return call.direction_var  # type: ignore[return-value]
    if call.fixed is not None:
        return call.fixed.direction
    origin = call.channels.get(call.origin_uid or "")
    if origin is None:
        return "unknown"
    if origin.ext is not None:
        dialled = call.dialled_raw
        if dialled and is_extension(dialled, st.settings.max_extension_length):
            return "internal"
        if call.external_dest or (dialled and norm(st, dialled)):
            return "outbound"
        if call.operator_dest:
            return "internal"
        return "unknown"
    if origin.inbound:
        return "inbound"
    return "unknown"


def record(st: TrackerState, call: Call, ended_at: float | None = None,
           outage: bool = False) -> CallRecord:
    direction_ = direction(st, call)
    origin = call.channels.get(call.origin_uid or "")
    fixed = call.fixed
    number_ = name = did = dialled = None
    customer: Channel | None = None
    if direction_ == "inbound" or (direction_ == "unknown" and origin is not None
                                   and origin.ext is None):
        customer = origin
        if customer is not None:
            number_ = number(st, customer.cid_num)
            if customer.inbound_exten:
                did = number(st, customer.inbound_exten)
    elif direction_ == "outbound":
        dialled = call.dialled_raw or dialled_fallback(origin)
        customer = call.channels.get(call.customer_uid or "")
        if dialled is None and customer is not None and DIALLED.fullmatch(customer.cid_num):
            # The dialled channel's caller ID is the number it was dialled with.
            dialled = customer.cid_num
        number_ = number(st, dialled)
        if customer is not None:
            own = number(st, customer.cid_num)
            if number_ is None:
                number_ = own
            elif own != number_:
                customer = None  # its caller id is not the customer's
    elif direction_ == "internal":
        dialled = call.dialled_raw
    if customer is not None and number_ is not None:
        cname = customer.cid_name.strip()
        if (cname not in UNKNOWN_NAMES and cname != customer.cid_num
                and norm(st, cname) != number_):
            name = cname
    if dialled is None and direction_ == "internal":
        dialled = dialled_fallback(origin)
    if fixed is not None:
        number_ = number_ or fixed.customer_number
        name = name or fixed.customer_name
        did = did or fixed.did
        dialled = dialled or fixed.dialled
    operator = call.operator
    if operator is None and direction_ == "outbound" and origin is not None:
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
        pbx=st.settings.pbx,
        linkedid=call.linkedid,
        started_at=call.started_at,
        direction=direction_,
        customer_number=None if direction_ == "internal" else number_,
        customer_name=None if direction_ == "internal" else name,
        did=did if direction_ in ("inbound", "unknown") else None,
        dialled=dialled if direction_ in ("outbound", "internal") else None,
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
        rec.status = status(call, direction_)
    return rec


def dialled_fallback(origin: Channel | None) -> str | None:
    """No Dial seen (joined mid-call): what the operator's channel runs is what they dialled."""
    if origin is None or not origin.exten or origin.exten == origin.ext:
        return None
    return origin.exten if DIALLED.fullmatch(origin.exten) else None


def status(call: Call, direction_: Direction) -> Status:
    if call.answered_at is not None:
        return "answered"
    if call.queue_abandoned:
        return "abandoned"
    if call.originate_failed:
        # Whose phone never came up, and why (OriginateResponse Reason, or its Dial's end):
        # rang out, busy, or failed (no such channel, congestion).
        return _ORIGINATE_OUTCOME.get(call.originate_status or "", "failed")
    status_ = call.last_dial_status
    if status_ is None and call.originate_status not in (None, "ANSWER"):
        status_ = call.originate_status
    if status_ == "NOANSWER":
        return "no_answer"
    if status_ == "BUSY":
        return "busy"
    if status_ in ("CHANUNAVAIL", "CONGESTION"):
        return "failed"
    if status_ == "CANCEL":
        return "abandoned"
    if call.queue_left:
        return "no_answer"
    return "abandoned" if direction_ == "inbound" else "failed"


def public_sig(rec: CallRecord) -> tuple[object, ...]:
    """What of a record, when it changes, is worth an `updated` change."""
    return (rec.direction, rec.customer_number, rec.customer_name, rec.did, rec.dialled,
            rec.operator, tuple(rec.operators_rung), rec.queue, len(rec.transfers),
            rec.click_to_call_id, rec.answered_at is not None)
