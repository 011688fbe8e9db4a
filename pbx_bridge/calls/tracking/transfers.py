"""Every way a call changes hands, recorded as a `Transfer` on the call and reported as
`transferred`:

- blind: a `BlindTransfer` event (Asterisk's blind transfer, `#` on a phone).
- attended: an `AttendedTransfer` event. While the operator consults a colleague (Atxfer's
  Local pair, `Local/102@transfer`, dialling 102) the customer waits: that Dial's answer is a
  consultation, not the call being taken (`consultation`); the operator the call goes to is the
  phone behind the Local pair (`operator_behind`). The consultation is a call of its own until
  the transfer bridges it with this one (pbx_bridge.calls.tracking.channels.merge).
- blind, with no transfer event: another operator answers the answered call (an AMI Redirect of
  the customer, an operator panel's, or the dialplan sending it on): `answered_by`.
- pickup: a `Pickup` event, another phone answering a ringing one (`*8`, directed pickup).
"""

from __future__ import annotations

from crm_sync.phones import is_extension
from pbx_bridge.ami.events import AmiEvent
from pbx_bridge.calls.record import Transfer
from pbx_bridge.calls.tracking.answering import answer, ring_over
from pbx_bridge.calls.tracking.channels import merge, touch
from pbx_bridge.calls.tracking.reporting import emit
from pbx_bridge.calls.tracking.state import (
    ORIG_TRANSFERER,
    SECOND_TRANSFERER,
    TARGET,
    TRANSFER_TARGET,
    TRANSFEREE,
    TRANSFERER,
    Call,
    Channel,
    P,
    TrackerState,
)


def add_transfer(call: Call, transfer: Transfer) -> bool:
    """False for a transfer already recorded (the same event seen twice)."""
    if any(t.kind == transfer.kind and t.at == transfer.at for t in call.transfers):
        return False
    call.transfers.append(transfer)
    return True


def answered_by(st: TrackerState, call: Call, ts: float, dest: Channel) -> None:
    """`dest` answered (pbx_bridge.calls.tracking.answering.answer). When the call was answered
    already and another operator took it without any transfer event, the customer was sent on
    by a Redirect (an AMI client's, an operator panel's) or the dialplan: a blind transfer from
    the one before."""
    handed = answer(st, call, ts, dest)
    if handed is None:
        return
    previous, ext = handed
    if add_transfer(call, Transfer("blind", ts, previous, ext)):
        emit(st, call, "transferred", ext)


def consultation(call: Call, caller: Channel) -> bool:
    """A Dial placed, once the call was answered, by a channel that is neither the one
    that started the call nor the customer's: a consultation, not the call being taken."""
    if call.answered_at is None:
        return False
    origin = call.channels.get(call.origin_uid or "")
    customer = call.channels.get(call.customer_uid or "")
    return not any(ch is not None and caller.leg is ch.leg for ch in (origin, customer))


def operator_behind(call: Call, ch: Channel) -> str | None:
    """The operator a channel stands for: its own extension, or, for a Local pair (Atxfer's
    `Local/102@transfer`), the operator's phone that pair dialled or is bridged with."""
    if ch.ext is not None:
        return ch.ext
    leg_uids = {c.uid for c in call.channels.values() if c.leg is ch.leg}
    bridges = {call.bridges[u] for u in leg_uids if u in call.bridges}
    found: Channel | None = None
    for other in call.channels.values():
        if other.ext is None or other.leg is ch.leg:
            continue
        if call.dialled_by.get(other.uid) in leg_uids or call.bridges.get(other.uid) in bridges:
            if found is None or (other.up and not found.up):
                found = other
    return found.ext if found is not None else None


# --- event handlers (each returns the call it touched) ----------------------------------


def on_blind_transfer(st: TrackerState, ev: AmiEvent, ts: float) -> Call | None:
    if ev.headers.get("Result", "Success") != "Success":
        return None
    transferer = touch(st, ev, ts, TRANSFERER, False)
    transferee = touch(st, ev, ts, TRANSFEREE, False)
    ref = transferee or transferer
    if ref is None:
        return None
    call = ref.call
    exten = ev.headers.get("Extension", "")
    to_op = exten if is_extension(exten, st.settings.max_extension_length) else None
    from_op = transferer.ext if transferer is not None else call.operator
    if not add_transfer(call, Transfer("blind", ts, from_op, to_op)):
        return call
    if to_op is not None:
        call.operator = to_op
    emit(st, call, "transferred", to_op)
    return call


def on_attended_transfer(st: TrackerState, ev: AmiEvent, ts: float) -> Call | None:
    if ev.headers.get("Result", "Success") != "Success":
        return None
    transferee = touch(st, ev, ts, TRANSFEREE, False)
    orig = touch(st, ev, ts, ORIG_TRANSFERER, False)
    second = touch(st, ev, ts, SECOND_TRANSFERER, False)
    target = touch(st, ev, ts, TRANSFER_TARGET, False)
    main = transferee or orig
    if main is None:
        return None
    call = main.call
    for other in (second, target, orig):
        if other is not None and other.call is not call:
            merge(st, other.call, call)
    from_op = (orig.ext if orig is not None else None) or call.operator
    to_op = operator_behind(call, target) if target is not None else None
    if to_op is None:
        exten = ev.headers.get("TransferTargetExten", "")
        if exten in call.operators_rung:
            to_op = exten  # the extension the consultation dialled, already rung for this call
    if not add_transfer(call, Transfer("attended", ts, from_op, to_op)):
        return call
    if to_op is not None:
        call.operator = to_op
        if to_op not in call.operators_rung:
            call.operators_rung.append(to_op)
    emit(st, call, "transferred", to_op)
    return call


def on_pickup(st: TrackerState, ev: AmiEvent, ts: float) -> Call | None:
    picker = touch(st, ev, ts, P, True)
    target = touch(st, ev, ts, TARGET, False)
    if target is None:
        return picker.call if picker is not None else None
    call = target.call
    if picker is not None and picker.call is not call:
        merge(st, picker.call, call)
    from_op = target.ext
    to_op = picker.ext if picker is not None else None
    if not add_transfer(call, Transfer("pickup", ts, from_op, to_op)):
        return call
    if to_op is not None:
        call.pickups[target.uid] = to_op
    ring_over(call, target)
    if call.answered_at is None and picker is not None:
        answered_by(st, call, ts, picker)
    elif to_op is not None:
        call.operator = to_op
    emit(st, call, "transferred", to_op)
    return call
