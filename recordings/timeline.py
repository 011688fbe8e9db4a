"""One recording per call, on the call's own timeline.

A call's recording runs from its answer to its end (its talk time). Each MixMonitor segment's
file is placed where Asterisk wrote it: its frames belong, in order, to the stretches of time
the segment recorded (from MixMonitor's start to its stop, and with option `b` only while the
channel was in a bridge: Asterisk leaves the rest out of the file altogether). Where nobody was
bridged with the customer (ringing, hold, the customer waiting while two operators consult) the
recording is silence. Where segments overlap, each moment is taken from one segment only: the
customer's own channel first (it hears whichever operator talks with the customer), else the
segment of an operator who was bridged with the customer at that moment; a sample is never used
twice. A consultation between operators is therefore not in the customer's recording.

Times are Asterisk's (the events' `Timestamp`), in epoch seconds; a sample is 1/8000 s and the
sample of time t is round(t * 8000) on every side, so positions agree to the sample.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from recordings.mixmonitor import Segment

SAMPLE_RATE = 8000
Pcm = npt.NDArray[np.int16]  # (frames, 2): left = operator, right = customer
Interval = tuple[int, int]  # [start, end) in samples


@dataclass(frozen=True)
class Window:
    """From `start` to `end` the customer was bridged with these channels (not Local ones)."""

    start: float
    end: float
    channels: tuple[str, ...]


@dataclass(frozen=True)
class CallTimeline:
    answered_at: float
    ended_at: float
    customer_channel: str | None = None
    # When the customer talked with someone; None = not known (the bridge did not see the whole
    # call: no masking then, each segment is placed by its own times).
    windows: tuple[Window, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"answered_at": self.answered_at, "ended_at": self.ended_at,
                "customer_channel": self.customer_channel,
                "windows": None if self.windows is None else [
                    [w.start, w.end, list(w.channels)] for w in self.windows]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CallTimeline:
        windows = data.get("windows")
        return cls(float(data["answered_at"]), float(data["ended_at"]),
                   None if data.get("customer_channel") is None else str(data["customer_channel"]),
                   None if windows is None else tuple(
                       Window(float(a), float(b), tuple(str(c) for c in chans))
                       for a, b, chans in windows))


def sample(t: float) -> int:
    return round(t * SAMPLE_RATE)


def _intersect(a: Sequence[Interval], b: Sequence[Interval]) -> list[Interval]:
    out: list[Interval] = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo < hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def _subtract(a: Sequence[Interval], b: Sequence[Interval]) -> list[Interval]:
    out: list[Interval] = []
    for lo, hi in a:
        cursor = lo
        for blo, bhi in b:
            if bhi <= cursor or blo >= hi:
                continue
            if blo > cursor:
                out.append((cursor, blo))
            cursor = max(cursor, bhi)
        if cursor < hi:
            out.append((cursor, hi))
    return out


def _merge(intervals: Iterable[Interval]) -> list[Interval]:
    out: list[Interval] = []
    for lo, hi in sorted(i for i in intervals if i[0] < i[1]):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def file_chunks(segment: Segment, frames: int) -> list[tuple[int, int, int]]:
    """Where the segment's file frames belong: (first sample, end sample, first file frame),
    absolute samples. Without known stretches, the file runs on from its start."""
    stretches: list[tuple[float, float | None]] = (
        [(segment.started_at, None)] if segment.recorded is None else list(segment.recorded))
    out: list[tuple[int, int, int]] = []
    cursor = 0
    for start, end in stretches:
        if cursor >= frames:
            break
        first = sample(start)
        length = frames - cursor if end is None else min(frames - cursor, sample(end) - first)
        if length > 0:
            out.append((first, first + length, cursor))
            cursor += length
    return out


def _priority(segment: Segment) -> tuple[int, float]:
    # The customer's channel first; then operators' segments, the latest started first (a new
    # operator took over).
    return (0, segment.started_at) if segment.perspective == "customer" else (1, -segment.started_at)


def allowed(segment: Segment, timeline: CallTimeline, origin: int) -> list[Interval] | None:
    """Output positions the segment may fill (None = anywhere)."""
    if timeline.windows is None:
        return None
    return _merge((sample(w.start) - origin, sample(w.end) - origin) for w in timeline.windows
                  if segment.perspective == "customer" or segment.channel in w.channels)


def place(parts: Sequence[tuple[Segment, Pcm]], timeline: CallTimeline) -> Pcm:
    """The call's recording: talk time long, each moment from one segment (or silence)."""
    origin = sample(timeline.answered_at)
    total = max(0, sample(timeline.ended_at) - origin)
    out = np.zeros((total, 2), dtype=np.int16)
    free: list[Interval] = [(0, total)] if total else []
    for segment, pcm in sorted(parts, key=lambda p: _priority(p[0])):
        permitted = allowed(segment, timeline, origin)
        for first, end, file_first in file_chunks(segment, len(pcm)):
            chunk = [(first - origin, end - origin)]
            usable = _intersect(_intersect(chunk, free), permitted if permitted is not None
                                else [(0, total)])
            for lo, hi in usable:
                source = file_first + (lo - (first - origin))
                out[lo:hi] = pcm[source: source + (hi - lo)]
            free = _subtract(free, usable)
    return out


def span_of(parts: Sequence[tuple[Segment, Pcm]]) -> CallTimeline:
    """A timeline from the segments alone (nothing else known): from the first recorded sample
    to the last."""
    starts, ends = [], []
    for segment, pcm in parts:
        for first, end, _ in file_chunks(segment, len(pcm)):
            starts.append(first)
            ends.append(end)
    if not starts:
        return CallTimeline(0.0, 0.0)
    return CallTimeline(min(starts) / SAMPLE_RATE, max(ends) / SAMPLE_RATE)
