"""The AMI actions that record a call: MixMonitor per segment, StopMixMonitor at the end.

Files are named after the call's Linkedid, so a file can always be tied to its call (and the
name says nothing the request could choose). A call with a customer is recorded on the
*customer's* channel from its answer to its end: the one channel that stays in the call however
it is transferred (blind, attended, pickup), which hears whichever operator talks with the
customer at each moment. From the customer's side the directions are swapped, which the
segment's `perspective` records and the conversion undoes (operator left, customer right). A
call without a customer channel (internal) is recorded on the answering operator's channel, and
each operator who takes it later gets a segment of their own (``<linkedid>.s2``, ...). The
segments are placed on the call's timeline (recordings.timeline).

Asterisk 20.11 / 21.6 / 22.1 and later: options ``bD`` give one stereo ``.raw`` (left = audio read
from the channel, right = audio written to it). Older versions: ``b`` plus ``r(file)`` and
``t(file)``, one file per direction, merged afterwards.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Mode = Literal["stereo", "legs"]
# Whose channel MixMonitor runs on: "operator" (left = read = operator) or "customer" (swapped).
Perspective = Literal["operator", "customer"]

# First releases of each branch with MixMonitor's `D` (interleaved stereo) option.
_STEREO_SINCE: dict[int, tuple[int, int]] = {20: (20, 11), 21: (21, 6), 22: (22, 1)}
_VERSION = re.compile(r"(?:certified[/-])?(\d+)\.(\d+)(?:\.(\d+))?", re.I)
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")


class VersionError(ValueError):
    """An Asterisk version string that names no release."""


def parse_version(text: str) -> tuple[int, int, int]:
    """``22.10.1`` -> (22, 10, 1); ``certified/20.7-cert1`` -> (20, 7, 0); ``GIT-master-...`` is newest."""
    text = text.strip()
    if re.match(r"(?i)^(git-)?master\b", text):
        return (999, 0, 0)
    match = _VERSION.search(text)
    if not match:
        raise VersionError(f"not an Asterisk version: {text!r}")
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


def supports_stereo(version: str) -> bool:
    """Whether MixMonitor has option D (stereo .raw). Unknown versions get the leg files."""
    try:
        major, minor, _patch = parse_version(version)
    except VersionError:
        return False
    if major > max(_STEREO_SINCE):
        return True
    since = _STEREO_SINCE.get(major)
    return since is not None and (major, minor) >= since


def safe_file_stem(linkedid: str) -> str:
    """The Linkedid as a file name: Asterisk's ids are [A-Za-z0-9.-]; anything else becomes `_`."""
    stem = _SAFE_NAME.sub("_", linkedid).lstrip(".")
    if not stem:
        raise ValueError(f"a Linkedid that makes no file name: {linkedid!r}")
    return stem


@dataclass(frozen=True)
class Segment:
    """One MixMonitor run. `files` are names relative to the spool dir."""

    index: int  # 1, 2, ... in call order
    mode: Mode
    channel: str
    operator: str | None
    files: dict[str, str]  # stereo: {"stereo"}; legs: {"rx", "tx", "mix"}
    # When MixMonitor started writing: Asterisk's time once its event was seen (MIXMONITOR_FILENAME),
    # the bridge's clock until then.
    started_at: float
    perspective: Perspective = "operator"
    # The stretches of Asterisk time the file holds, in order (with option b only while the
    # channel was bridged); None = not known, the file runs on from started_at.
    recorded: tuple[tuple[float, float], ...] | None = None

    def to_dict(self) -> dict[str, object]:
        return {"index": self.index, "mode": self.mode, "channel": self.channel,
                "operator": self.operator, "files": dict(self.files), "started_at": self.started_at,
                "perspective": self.perspective,
                "recorded": None if self.recorded is None else [list(r) for r in self.recorded]}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Segment:
        files = data["files"]
        if not isinstance(files, dict):
            raise ValueError("segment files must be a mapping")
        recorded = data.get("recorded")
        return cls(index=int(str(data["index"])), mode="legs" if data["mode"] == "legs" else "stereo",
                   channel=str(data["channel"]),
                   operator=None if data.get("operator") is None else str(data["operator"]),
                   files={str(k): str(v) for k, v in files.items()},
                   started_at=float(str(data["started_at"])),
                   perspective="customer" if data.get("perspective") == "customer" else "operator",
                   recorded=None if not isinstance(recorded, list) else tuple(
                       (float(a), float(b)) for a, b in recorded))


def plan_segment(linkedid: str, index: int, *, stereo: bool, channel: str, operator: str | None,
                 started_at: float, perspective: Perspective = "operator") -> Segment:
    stem = safe_file_stem(linkedid) + ("" if index == 1 else f".s{index}")
    if stereo:
        return Segment(index, "stereo", channel, operator, {"stereo": f"{stem}.raw"}, started_at,
                       perspective)
    # The mixed mono file MixMonitor insists on is only a by-product, removed with the legs.
    files = {"rx": f"{stem}.rx.raw", "tx": f"{stem}.tx.raw", "mix": f"{stem}.mix.raw"}
    return Segment(index, "legs", channel, operator, files, started_at, perspective)


def spool_path_for_asterisk(spool_dir: str, name: str) -> str:
    """The path written into the action: absolute under Asterisk's spool dir, or bare (Asterisk
    then puts it in its own monitor/ dir)."""
    if "/" in name or name.startswith("."):
        raise ValueError(f"not a plain file name: {name!r}")
    return f"{spool_dir.rstrip('/')}/{name}" if spool_dir else name


def mixmonitor_action(segment: Segment, spool_dir: str) -> dict[str, str]:
    if segment.mode == "stereo":
        return {"Action": "MixMonitor", "Channel": segment.channel,
                "File": spool_path_for_asterisk(spool_dir, segment.files["stereo"]), "Options": "bD"}
    rx = spool_path_for_asterisk(spool_dir, segment.files["rx"])
    tx = spool_path_for_asterisk(spool_dir, segment.files["tx"])
    # Options are comma-free: r() and t() take a path, which must not contain `)` or `,`.
    for path in (rx, tx):
        if any(c in path for c in "(),|"):
            raise ValueError(f"spool path unusable in MixMonitor options: {path!r}")
    return {"Action": "MixMonitor", "Channel": segment.channel,
            "File": spool_path_for_asterisk(spool_dir, segment.files["mix"]),
            "Options": f"br({rx})t({tx})"}


def stop_action(channel: str) -> dict[str, str]:
    return {"Action": "StopMixMonitor", "Channel": channel}
