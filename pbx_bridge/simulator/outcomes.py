"""Click-to-call outcomes other than "answered", derived from the real traces.

The lab recorded click-to-call only answered (click_to_call.ami). The other outcomes are put
together from real events of the same Asterisk, channel for channel:

- customer busy: click_to_call.ami up to the moment the operator's channel dials the public
  network, then inbound_busy.ami from the moment its dialled operator leg runs `Busy()`, with the
  busy trace's two Local channel pairs renamed to click-to-call's (the caller's pair -> the
  operator's phone pair, the busy leg -> the public-network leg) and its numbers, contexts and
  ids to click-to-call's. The Originate itself succeeded (the operator answered): its
  OriginateResponse stays `Success` / `Reason: 4`; the dial to the customer ends `BUSY`.
- operator does not answer: click_to_call.ami up to the Originate's own DialBegin, then the
  ringing and the time-out of inbound_noanswer.ami's operator leg (renamed to the operator's
  phone pair), the Dial events without a caller (as an Originate's are), after `ring_seconds`;
  then `LINKEDID_END` and an `OriginateResponse` with `Response: Failure`, `Reason: 3` (rang, no
  answer) naming the requested channel, as Asterisk does when the originated channel never
  came up.

The result is a list of frames that `build_template_from_frames` turns into a call template.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from pbx_bridge.simulator.trace import Frame, parse_headers


def _uids_by_channel(frames: list[Frame]) -> dict[str, str]:
    return {f.get("Channel"): f.get("Uniqueid") for f in frames if f.name == "Newchannel"}


def _rewriter(mapping: dict[str, str]) -> Callable[[str], str]:
    pattern = re.compile(r"(?<![\w.+])(" + "|".join(
        re.escape(k) for k in sorted(mapping, key=len, reverse=True)) + r")(?![\w])")
    return lambda text: pattern.sub(lambda m: mapping[m.group(1)], text)


def _call_id(c2c: list[Frame]) -> str:
    return next((v[8:] for f in c2c for k, v in f.headers
                 if k == "ChanVariable" and v.startswith("CALL_ID=") and len(v) > 8), "")


def _line_rewriter(mapping: dict[str, str], call_id: str) -> Callable[[str], str]:
    """The mapping, plus: the click-to-call's CALL_ID on every channel (Originate set it)."""
    rewrite = _rewriter(mapping)

    def line(text: str) -> str:
        text = rewrite(text)
        return f"ChanVariable: CALL_ID={call_id}" if text == "ChanVariable: CALL_ID=" else text

    return line


def frame_from_text(text: str) -> Frame:
    raw = text.encode("utf-8")
    return Frame("event", parse_headers(raw), raw)


def retime(frame: Frame, shift: float, rewrite: Callable[[str], str] | None = None,
           keep_line: Callable[[str], bool] | None = None) -> Frame:
    """The frame `shift` seconds later (Timestamp, and a CEL event's EventTime with it)."""
    lines = []
    stamp = frame.timestamp
    for line in frame.raw.decode("utf-8").split("\r\n"):
        if line.startswith("Timestamp: "):
            line = f"Timestamp: {float(line[11:]) + shift:.6f}"
        elif line.startswith("EventTime: ") and stamp is not None and shift:
            line = "EventTime: " + time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(stamp + shift))
        elif rewrite is not None:
            line = rewrite(line)
        if keep_line is None or not line or keep_line(line):
            lines.append(line)
    return frame_from_text("\r\n".join(lines))


def _index(frames: list[Frame], match: Callable[[Frame], bool]) -> int:
    for i, frame in enumerate(frames):
        if match(frame):
            return i
    raise ValueError("trace does not have the expected event")


def customer_busy(c2c: list[Frame], busy: list[Frame]) -> list[Frame]:
    c2c_uids, busy_uids = _uids_by_channel(c2c), _uids_by_channel(busy)
    op = next(ch for ch in c2c_uids if "@op-phone-" in ch).rsplit(";", 1)[0]
    pstn = next(ch for ch in c2c_uids if "@pstn-" in ch).rsplit(";", 1)[0]
    cust = next(ch for ch in busy_uids if ch.startswith("Local/cust@customer-")).rsplit(";", 1)[0]
    leg = next(ch for ch in busy_uids if "@operators-" in ch).rsplit(";", 1)[0]
    op_ext = op.split("/")[1].split("@")[0]
    dialled = pstn.split("/")[1].split("@")[0]
    busy_leg_ext = leg.split("/")[1].split("@")[0]
    customer = next(f.get("CallerIDNum") for f in busy if f.name == "NewCallerid"
                    and f.get("Channel").startswith(cust))
    did = next(f.get("Exten") for f in busy if f.get("Context") == "from-trunk")
    mapping = {
        cust: op, "Local/cust@customer": op.rsplit("-", 1)[0], leg: pstn,
        f"{leg.rsplit('-', 1)[0]}/n,10": f"{pstn.rsplit('-', 1)[0]}/n,15",
        leg.rsplit("-", 1)[0]: pstn.rsplit("-", 1)[0],
        busy_uids[f"{cust};1"]: c2c_uids[f"{op};1"], busy_uids[f"{leg};1"]: c2c_uids[f"{pstn};1"],
        busy_uids[f"{leg};2"]: c2c_uids[f"{pstn};2"],
        customer: op_ext, customer.lstrip("+"): op_ext, did: dialled,
        "from-trunk": "from-internal", "customer": "op-phone", "operators": "pstn",
        "cust": op_ext, busy_leg_ext: dialled, "DIRECTION=inbound": "DIRECTION=outbound",
    }
    rewrite_line = _line_rewriter(mapping, _call_id(c2c))

    dial_to_customer = _index(c2c, lambda f: f.name == "DialBegin"
                              and f.get("DestChannel").startswith(pstn))
    busy_starts = _index(busy, lambda f: f.name == "Newexten" and f.get("Channel") == f"{leg};2"
                         and f.get("Application") == "Set")
    head = c2c[: dial_to_customer + 1]
    shift = (head[-1].timestamp or 0.0) - (busy[busy_starts].timestamp or 0.0) + 0.000005
    tail = [retime(f, shift, rewrite_line) for f in busy[busy_starts:]
            if f.name != "QueueMemberStatus"]  # the public network is no queue member
    return head + tail


def operator_noanswer(c2c: list[Frame], noanswer: list[Frame], ring_seconds: float) -> list[Frame]:
    c2c_uids, na_uids = _uids_by_channel(c2c), _uids_by_channel(noanswer)
    op = next(ch for ch in c2c_uids if "@op-phone-" in ch).rsplit(";", 1)[0]
    leg = next(ch for ch in na_uids if "@operators-" in ch).rsplit(";", 1)[0]
    caller = next(ch for ch in na_uids if ch.startswith("Local/cust@customer-")).rsplit(";", 1)[0]
    op_ext = op.split("/")[1].split("@")[0]
    leg_ext = leg.split("/")[1].split("@")[0]
    customer = next(f.get("CallerIDNum") for f in noanswer if f.name == "NewCallerid"
                    and f.get("Channel").startswith(caller))
    did = next(f.get("Exten") for f in noanswer if f.get("Context") == "from-trunk")
    linkedid = c2c_uids[f"{op};1"]
    mapping = {
        leg: op, leg.rsplit("-", 1)[0]: op.rsplit("-", 1)[0],
        na_uids[f"{leg};1"]: linkedid, na_uids[f"{leg};2"]: c2c_uids[f"{op};2"],
        na_uids[f"{caller};1"]: linkedid,
        customer: op_ext, customer.lstrip("+"): op_ext, did: op_ext, leg_ext: op_ext,
        "operators": "op-phone", "DIRECTION=inbound": "DIRECTION=",
    }
    rewrite = _line_rewriter(mapping, _call_id(c2c))
    originate_dial = _index(c2c, lambda f: f.name == "DialBegin" and not f.get("Channel"))
    head = c2c[: originate_dial + 1] + [
        f for f in c2c[originate_dial + 1 :]
        if f.name == "CEL" and f.get("EventName") == "CHAN_START" and f.get("Channel").startswith(op)]
    start = _index(noanswer, lambda f: f.name == "Newexten" and f.get("Channel") == f"{leg};2"
                   and f.get("Application") == "Set")
    timeout_at = _index(noanswer, lambda f: f.name == "DialEnd")
    original_ring = (noanswer[timeout_at].timestamp or 0.0) - (noanswer[start].timestamp or 0.0)
    shift = (head[-1].timestamp or 0.0) - (noanswer[start].timestamp or 0.0) + 0.000005

    def dest_only(line: str) -> bool:
        key = line.partition(":")[0]
        return key.startswith("Dest") or key in ("Event", "Privilege", "Timestamp", "SystemName",
                                                 "DialStatus", "Forward")

    tail: list[Frame] = []
    for index, frame in enumerate(noanswer[start:], start):
        about_leg = any(v.startswith(leg.rsplit("-", 1)[0]) for k, v in frame.headers
                        if k in ("Channel", "DestChannel", "Device"))
        if not about_leg or frame.name in ("DialBegin", "QueueMemberStatus"):
            continue
        extra = ring_seconds - original_ring if index >= timeout_at else 0.0
        keep = dest_only if frame.name in ("DialState", "DialEnd") else None
        tail.append(retime(frame, shift + extra, rewrite, keep))
    last_cel = next(f for f in reversed(tail) if f.name == "CEL")
    ended = last_cel.raw.decode().replace("EventName: CHAN_END", "EventName: LINKEDID_END")
    tail.append(retime(frame_from_text(ended), 0.000002))
    success = next(f for f in c2c if f.name == "OriginateResponse")
    lines = []
    for line in success.raw.decode().split("\r\n"):
        key = line.partition(":")[0]
        if key == "Timestamp":
            line = f"Timestamp: {(tail[-1].timestamp or 0.0) + 0.000004:.6f}"
        elif key == "Response":
            line = "Response: Failure"
        elif key == "Channel":
            line = f"Channel: {op.rsplit('-', 1)[0]}/n"
        elif key == "Reason":
            line = "Reason: 3"
        elif key.startswith("ChanVariable"):
            continue  # no channel came up: Asterisk has none to report
        lines.append(line)
    tail.append(frame_from_text("\r\n".join(lines)))
    return head + tail
