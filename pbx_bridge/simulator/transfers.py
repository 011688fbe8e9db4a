"""Blind transfer and Redirect of a live call, made of the real events of sip_attended_transfer.

The lab recorded transfers over SIP only as an attended transfer (`Atxfer`). A blind transfer
(`BlindTransfer`, or the phone's blind-transfer key) and a `Redirect` of the customer's channel
are put together here from that trace's own events, as Asterisk 22.10.1 orders them for a
two-party basic bridge (main/bridge.c ast_bridge_transfer_blind, main/manager.c action_redirect,
main/stasis_bridges.c blind_transfer_to_ami, main/cel.c cel_blind_transfer_cb):

1. up to the moment the attended transfer's client acted: the same call (customer and 101
   talking in bridge A);
2. `BlindTransfer` (Result, the transferer's and transferee's snapshots, bridge A, IsExternal,
   Context, Extension) and CEL `BLINDTRANSFER`; a Redirect has neither;
3. the customer's channel leaves bridge A for the dialplan; 101, alone, is hung up as the bridge
   dissolves (BridgeLeave, BridgeDestroy, Hangup, its CEL rows);
4. the customer's channel runs `transfer,102,1` = `Dial(PJSIP/102,15)`: the trace's own events of
   the Local pair's `;2` half dialling 102, with that half renamed to the customer's channel;
   102 rings 2.0 s (as in the trace) and answers; bridge C;
5. the rest of the call between the customer and 102 as in the trace, to its hang-up.

Steps 3-5 happen as fast as in the trace (the dial starts 4 ms after the action) and keep the
trace's gaps; the customer is in no bridge while 102 rings, which is what MixMonitor option `b`
on the customer's channel sees.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

from pbx_bridge.simulator.outcomes import frame_from_text, retime
from pbx_bridge.simulator.trace import Frame

# Snapshot fields of a channel in a manager event, in Asterisk's order
# (ast_manager_build_channel_state_string_prefix).
_SNAPSHOT = ("Channel", "ChannelState", "ChannelStateDesc", "CallerIDNum", "CallerIDName",
             "ConnectedLineNum", "ConnectedLineName", "Language", "AccountCode", "Context",
             "Exten", "Priority", "Uniqueid", "Linkedid")
_BRIDGE = ("BridgeUniqueid", "BridgeType", "BridgeTechnology", "BridgeCreator", "BridgeName",
           "BridgeNumChannels", "BridgeVideoSourceMode")
DIAL_AFTER_ACTION = 0.004  # the transferee's dialplan starts this long after the action


@dataclass(frozen=True)
class Variant:
    """A call made from the attended-transfer trace's frames with another transfer in it."""

    frames: list[Frame]
    actions: list[tuple[int, list[tuple[str, str]]]]  # as templates.driving_actions gives them


@dataclass(frozen=True)
class _Cast:
    """Who is who in the attended-transfer trace."""

    transferer: str  # PJSIP/101-...
    customer: str  # PJSIP/trunk-...
    local1: str  # Local/102@transfer-...;1
    local2: str
    target: str  # PJSIP/102-...
    bridge_a: str  # the customer's bridge with 101
    context: str
    exten: str


def _cast(events: list[Frame], atxfer: list[tuple[str, str]]) -> _Cast:
    fields = dict(atxfer)
    transferer = fields["Channel"]
    customer = next(f.get("Channel") for f in events
                    if f.name == "Newchannel" and f.get("Context") == "from-trunk")
    local1 = next(f.get("Channel") for f in events
                  if f.name == "Newchannel" and f.get("Channel").startswith("Local/")
                  and f.get("Channel").endswith(";1"))
    target = next(f.get("DestChannel") for f in events
                  if f.name == "DialBegin" and f.get("Channel") == local1[:-1] + "2")
    bridge_a = next(f.get("BridgeUniqueid") for f in events
                    if f.name == "BridgeEnter" and f.get("Channel") == customer)
    return _Cast(transferer, customer, local1, local1[:-1] + "2", target, bridge_a,
                 fields.get("Context", ""), fields.get("Exten", ""))


def _device(channel: str) -> str:
    """`PJSIP/101-00000088` -> `PJSIP/101` (the device of DeviceStateChange and queue members)."""
    return channel.rsplit("-", 1)[0]


def _about(frame: Frame, *channels: str) -> bool:
    for channel in channels:
        if channel in (frame.get("Channel"), frame.get("DestChannel")):
            return True
        if _device(channel) in (frame.get("Device"), frame.get("Interface")):
            return True
    return False


def _snapshot(events: list[Frame], channel: str, prefix: str) -> list[str]:
    """The channel's latest snapshot in the events, its fields named with `prefix`."""
    last = next(f for f in reversed(events) if f.get("Channel") == channel and f.get("Uniqueid"))
    lines = [f"{prefix}{k}: {last.get(k)}" for k in _SNAPSHOT]
    lines += [f"{prefix}ChanVariable: {v}" for k, v in last.headers if k == "ChanVariable"]
    return lines


def _bridge_state(events: list[Frame], bridge: str) -> list[str]:
    """Bridge A's state as the AttendedTransfer event described it (OrigBridge...)."""
    event = next(f for f in events if f.name == "AttendedTransfer"
                 and f.get("OrigBridgeUniqueid") == bridge)
    return [f"{k}: {event.get('Orig' + k)}" for k in _BRIDGE]


def _renamer(cast: _Cast, events: list[Frame]) -> Callable[[Frame], Frame]:
    """The Local pair's `;2` half (which dialled 102) becomes the customer's own channel."""
    uid = {f.get("Channel"): f.get("Uniqueid") for f in events if f.name == "Newchannel"}
    customer = next(f for f in events if f.get("Channel") == cast.customer)
    own = {k: customer.get(k) for k in ("CallerIDNum", "CallerIDName", "Uniqueid")}
    names = re.compile(re.escape(cast.local2) + "|" + re.escape(uid[cast.local2]))
    mapping = {cast.local2: cast.customer, uid[cast.local2]: uid[cast.customer]}

    def rename(frame: Frame) -> Frame:
        about_local2 = frame.get("Channel") == cast.local2
        lines = []
        for line in frame.raw.decode("utf-8").split("\r\n"):
            key = line.partition(":")[0]
            if about_local2 and key in own:
                line = f"{key}: {own[key]}"
            else:
                line = names.sub(lambda m: mapping[m.group(0)], line)
            lines.append(line)
        return frame_from_text("\r\n".join(lines))

    return rename


def _into_context(cast: _Cast) -> Callable[[str], str]:
    """The customer's channel's own snapshot once it runs the transfer context's extension
    (unprefixed Context/Exten/Priority lines; Dest... and other prefixes stay)."""
    def rewrite(line: str) -> str:
        key = line.partition(":")[0]
        if key == "Context":
            return f"Context: {cast.context}"
        if key == "Exten":
            return f"Exten: {cast.exten}"
        if key == "Priority":
            return "Priority: 1"
        return line

    return rewrite


def _blind_transfer_event(events: list[Frame], before: list[Frame], cast: _Cast, at: float) -> Frame:
    """`events`: the whole trace; `before`: its events up to the transfer (the snapshots)."""
    head = next(f for f in events if f.name == "AttendedTransfer")
    lines = ["Event: BlindTransfer", "Privilege: call,all", f"Timestamp: {at:.6f}",
             f"SystemName: {head.get('SystemName')}", "Result: Success",
             *_snapshot(before, cast.transferer, "Transferer"),
             *_snapshot(before, cast.customer, "Transferee"),
             *_bridge_state(events, cast.bridge_a),
             "IsExternal: Yes", f"Context: {cast.context}", f"Extension: {cast.exten}", "", ""]
    return frame_from_text("\r\n".join(lines))


def _cel_blind_transfer(events: list[Frame], cast: _Cast, at: float) -> Frame:
    attended = next(f for f in events if f.name == "CEL" and f.get("EventName") == "ATTENDEDTRANSFER")
    customer_uid = next(f.get("Uniqueid") for f in events if f.get("Channel") == cast.customer)
    extra = json.dumps({"extension": cast.exten, "context": cast.context, "bridge_id": cast.bridge_a,
                        "transferee_channel_name": cast.customer,
                        "transferee_channel_uniqueid": customer_uid}, separators=(",", ":"))

    def rewrite(line: str) -> str:
        if line.startswith("EventName: "):
            return "EventName: BLINDTRANSFER"
        if line.startswith("Extra: "):
            return "Extra: " + extra
        return line

    return retime(attended, at - (attended.timestamp or at), rewrite)


def _cel_bridge(frame: Frame) -> str:
    """The bridge a CEL BRIDGE_ENTER / BRIDGE_EXIT is about (its Extra's bridge_id)."""
    try:
        return str(json.loads(frame.get("Extra") or "{}").get("bridge_id", ""))
    except ValueError:
        return ""


def variants(frames: list[Frame], actions: list[tuple[int, list[tuple[str, str]]]]) -> dict[str, Variant]:
    """The `BlindTransfer` and `Redirect` variants of the attended-transfer trace (its broadcast
    events and its client's driving actions, the first being the Atxfer)."""
    k, atxfer = actions[0]
    if dict(atxfer).get("Action") != "Atxfer":
        raise ValueError("the trace's first driving action is not an Atxfer")
    cast = _cast(frames, atxfer)
    prefix, rest = frames[:k], frames[k:]
    at = rest[0].timestamp or 0.0
    rename = _renamer(cast, frames)
    dial = next(i for i, f in enumerate(rest) if f.name == "Newexten"
                and f.get("Channel") == cast.local2 and f.get("Application") == "Dial")
    shift = at + DIAL_AFTER_ACTION - (rest[dial].timestamp or 0.0)

    # 3. The customer's channel leaves bridge A; 101, alone, is hung up as the bridge dissolves.
    def first(match: Callable[[Frame], bool]) -> Frame:
        return next(f for f in rest if match(f))

    leave_customer = first(lambda f: f.name == "BridgeLeave" and f.get("Channel") == cast.customer
                           and f.get("BridgeUniqueid") == cast.bridge_a)
    exit_customer = first(lambda f: f.name == "CEL" and f.get("Channel") == cast.customer
                          and f.get("EventName") == "BRIDGE_EXIT" and _cel_bridge(f) == cast.bridge_a)
    leave_101 = first(lambda f: f.name == "BridgeLeave" and f.get("Channel") == cast.transferer
                      and f.get("BridgeUniqueid") == cast.bridge_a)
    exit_101 = first(lambda f: f.name == "CEL" and f.get("Channel") == cast.transferer
                     and f.get("EventName") == "BRIDGE_EXIT" and _cel_bridge(f) == cast.bridge_a)
    destroy_a = first(lambda f: f.name == "BridgeDestroy" and f.get("BridgeUniqueid") == cast.bridge_a)
    hangup_101 = first(lambda f: f.name == "Hangup" and f.get("Channel") == cast.transferer)
    hung_at = hangup_101.timestamp or 0.0
    after_hangup = [f for f in rest if (
        _about(f, cast.transferer) and abs((f.timestamp or 0.0) - hung_at) < 0.002
        and f.name in ("Hangup", "QueueMemberStatus", "DeviceStateChange"))
        or (f.name == "DeviceStateChange" and f.get("Device").startswith("Queue:")
            and abs((f.timestamp or 0.0) - hung_at) < 0.002)
        or (f.name == "CEL" and f.get("Channel") == cast.transferer
            and f.get("EventName") in ("HANGUP", "CHAN_END"))
        or (f.name == "Cdr" and f.get("Channel") == cast.transferer)]

    def alone(line: str) -> str:
        return "BridgeNumChannels: 0" if line.startswith("BridgeNumChannels: ") else line

    def moved(frame: Frame, when: float, rewrite: Callable[[str], str] | None = None) -> Frame:
        return retime(frame, when - (frame.timestamp or when), rewrite)

    dissolve = [moved(leave_customer, at + 0.0010), moved(exit_customer, at + 0.0011),
                moved(leave_101, at + 0.0020, alone), moved(destroy_a, at + 0.0025),
                moved(exit_101, at + 0.0026)]
    base = hangup_101.timestamp or 0.0
    dissolve += [moved(f, at + 0.0030 + ((f.timestamp or 0.0) - base)) for f in after_hangup]

    # 4-5. The customer's channel dials 102 as the Local half did, then talks to 102 to the end.
    attended_only = {"Hold", "MusicOnHoldStart", "MusicOnHoldStop", "LocalBridge", "BridgeMerge",
                     "AttendedTransfer", "LocalOptimizationBegin", "LocalOptimizationEnd"}
    local_pair = _device(cast.local1)
    moved_in = {id(f) for f in after_hangup}
    consultation = next(f.get("BridgeUniqueid") for f in rest if f.name == "BridgeEnter"
                        and f.get("Channel") == cast.transferer)
    into_transfer = _into_context(cast)
    follow: list[Frame] = []
    for frame in rest[dial:]:
        if frame.name in attended_only or id(frame) in moved_in:
            continue
        if _about(frame, cast.transferer, cast.local1):
            continue
        if frame.get("BridgeUniqueid") == consultation:
            continue  # the consultation's bridge B
        if frame.name == "DeviceStateChange" and frame.get("Device") == _device(cast.customer) \
                and frame.get("State") != "NOT_INUSE":
            continue  # the customer's phone line never went on hold
        if frame.get("Device").startswith(local_pair) or local_pair in frame.get("DestinationChannel"):
            continue  # the Local pair's device state and CDR
        if frame.name == "Cdr" and local_pair in frame.get("Channel"):
            continue
        if frame.get("BridgeUniqueid") == cast.bridge_a:
            continue  # bridge A ended in the dissolve above
        if frame.name == "CEL" and frame.get("EventName") in ("BRIDGE_ENTER", "BRIDGE_EXIT") and (
                frame.get("Channel") == cast.customer or _cel_bridge(frame) == cast.bridge_a
                or (frame.get("Channel") == cast.local2 and frame.get("EventName") == "BRIDGE_EXIT")):
            continue  # the customer's moves of the Local optimization, not of this call
        if frame.name == "BridgeLeave" and frame.get("Channel") == cast.local2:
            continue  # the Local optimization swapping the customer in
        if frame.get("Channel") == cast.local2 and frame.name in (
                "Newstate", "HangupRequest", "SoftHangupRequest", "Hangup", "NewCallerid"):
            continue  # the customer's channel is up already and goes on after the Dial
        if frame.name == "CEL" and frame.get("Channel") == cast.local2 and frame.get("EventName") in (
                "CHAN_START", "HANGUP", "CHAN_END", "ANSWER"):
            continue
        if frame.name == "VarSet" and frame.get("Variable") in ("ATTENDEDTRANSFER", "TRANSFERERNAME"):
            continue
        if frame.name == "BridgeEnter" and frame.get("Channel") == cast.customer:
            continue  # the optimization's swap: the customer is in bridge C from the Dial's answer
        about_customer = frame.get("Channel") == cast.customer
        follow.append(retime(rename(frame), shift, into_transfer if about_customer else None))

    blind_head = [_blind_transfer_event(frames, prefix, cast, at),
                  _cel_blind_transfer(frames, cast, at + 0.0005)]
    continuation = sorted(dissolve + follow, key=lambda f: f.timestamp or 0.0)
    blind = Variant(prefix + blind_head + continuation, [(k, [
        ("Action", "BlindTransfer"), ("Channel", cast.transferer), ("Context", cast.context),
        ("Exten", cast.exten)])])
    redirect = Variant(prefix + continuation, [(k, [
        ("Action", "Redirect"), ("Channel", cast.customer), ("Context", cast.context),
        ("Exten", cast.exten), ("Priority", "1")])])
    return {"BlindTransfer": blind, "Redirect": redirect}
