"""A write-ahead journal of the AMI events the bridge has read, one per PBX.

Asterisk keeps no event history: an event the bridge has read from the socket but not yet saved
exists only in the bridge's memory. If the process is killed (SIGKILL, OOM killer, power cut of
the VM) those events would be gone, and a call that began and ended in that window with them.
So every event the reader hands to the queue is first appended here, as the exact text it came
in (re-parsed on replay by the same parser), numbered in arrival order. The call pipeline saves,
in the same transaction as the calls, the number of the last event it has applied
(`ami_journal_checkpoints`); at the next start, the events after that number are applied before
anything new is read.

On disk: `<dir>/<pbx>/<first seq, 20 digits>.journal`, each record

    <seq> <received_at>\\r\\n<message text>\\r\\n\\r\\n

Writes go to the OS once per TCP read (the reader calls `flush()` at the end of each chunk), so
a killed process loses nothing it had read; a torn last record (the machine itself died in the
middle of a write) is skipped. Each start writes a new segment; a segment is rotated at
`segment_bytes` and deleted once every event in it is applied.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pbx_bridge.ami.events import AmiEvent
from pbx_bridge.ami.protocol import parse_event
from pbx_bridge.log import event

log = logging.getLogger("pbx_bridge.ami.journal")

SUFFIX = ".journal"
_TERMINATOR = b"\r\n\r\n"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class Segment:
    path: Path
    first_seq: int


def _segments(directory: Path) -> list[Segment]:
    found = []
    for path in directory.glob(f"*{SUFFIX}"):
        try:
            found.append(Segment(path, int(path.name[: -len(SUFFIX)])))
        except ValueError:
            continue  # not ours
    return sorted(found, key=lambda s: s.first_seq)


def read_records(path: Path) -> Iterator[tuple[int, float, str]]:
    """(seq, received_at, text) of every whole record in a segment, in order."""
    data = path.read_bytes()
    parts = data.split(_TERMINATOR)
    parts.pop()  # after the last terminator: empty, or a torn record
    for part in parts:
        head, sep, body = part.partition(b"\r\n")
        seq_text, _, at_text = head.partition(b" ")
        try:
            seq, at = int(seq_text), float(at_text)
        except ValueError:
            continue
        if sep:
            yield seq, at, body.decode("utf-8", "replace")


class Journal:
    """The journal of one PBX. `append` numbers an event; `flush` hands the pending records to
    the OS; `applied(seq)` deletes what is no longer needed; `unapplied(seq)` reads back what
    an earlier process read but never applied."""

    def __init__(self, root: Path, pbx: str, *, floor: int = 0,
                 segment_bytes: int = 64 * 2**20) -> None:
        """`floor`: the saved checkpoint; numbering goes on above it even if the directory was
        emptied, so a new event can never look applied already."""
        self.pbx = pbx
        self.directory = root / _SAFE_NAME.sub("_", pbx)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.segment_bytes = segment_bytes
        self._previous = _segments(self.directory)  # written by earlier processes
        self.last_seq = max(floor, self._last_seq(self._previous))
        self._pending: list[bytes] = []
        self._fd: int | None = None
        self._segment_size = 0
        self._current: list[Segment] = []  # this process's segments, oldest first
        self.bytes_written = 0

    @staticmethod
    def _last_seq(segments: list[Segment]) -> int:
        for segment in reversed(segments):
            last = None
            for seq, _at, _text in read_records(segment.path):
                last = seq
            if last is not None:
                return last
            if segment.first_seq > 0:
                return segment.first_seq - 1
        return 0

    # -- writing (the reader, synchronously) --------------------------------------------------

    def append(self, event: AmiEvent, text: str) -> int:
        """Number the event and queue its record for the next flush; returns its seq."""
        self.last_seq += 1
        self._pending.append(b"%d %r\r\n%s\r\n\r\n" % (self.last_seq, event.received_at,
                                                        text.encode("utf-8", "replace")))
        return self.last_seq

    def flush(self) -> None:
        """Write the pending records (one system call). An error is logged, never raised: the
        reader must go on; the events then have only the in-memory guarantee."""
        if not self._pending:
            return
        data = b"".join(self._pending)
        first = self.last_seq - len(self._pending) + 1
        self._pending.clear()
        try:
            if self._fd is None or self._segment_size >= self.segment_bytes:
                self._open_segment(first)
            assert self._fd is not None
            os.write(self._fd, data)
            self._segment_size += len(data)
            self.bytes_written += len(data)
        except OSError as exc:
            event(log, logging.ERROR, "ami.journal_write_failed", pbx=self.pbx, error=str(exc))
            self._close_fd()

    def _open_segment(self, first_seq: int) -> None:
        self._close_fd()
        path = self.directory / f"{first_seq:020d}{SUFFIX}"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._segment_size = 0
        self._current.append(Segment(path, first_seq))

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        self.flush()
        self._close_fd()

    # -- reading back and forgetting (the call pipeline) --------------------------------------

    def unapplied(self, checkpoint: int) -> list[tuple[int, AmiEvent]]:
        """The events earlier processes journaled after `checkpoint`, in order."""
        out = []
        for segment in self._previous:
            for seq, at, text in read_records(segment.path):
                if seq > checkpoint:
                    out.append((seq, parse_event(self.pbx, text, at)))
        return out

    def applied(self, seq: int) -> None:
        """Every event up to `seq` is saved: delete the segments that hold nothing later."""
        segments = self._previous + self._current
        for segment, following in itertools.pairwise(segments):
            if following.first_seq - 1 > seq:
                break
            try:
                segment.path.unlink(missing_ok=True)
            except OSError as exc:
                event(log, logging.WARNING, "ami.journal_delete_failed", path=str(segment.path),
                      error=str(exc))
                break
            if segment in self._previous:
                self._previous.remove(segment)
            else:
                self._current.remove(segment)
