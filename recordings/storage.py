"""Where recordings live.

- Asterisk writes into its spool (`spool_dir`, the path as *Asterisk* sees it: it goes into the
  MixMonitor action). The bridge reads the same files through a shared mount (`local_spool_dir`,
  the path as the *bridge* sees it). The two are configured separately.
- Stored WAVs: ``<recordings dir>/YYYY/MM/DD/<call id>.wav`` (UTC date of the call's start);
  the database keeps the part after the recordings dir.

Only ids and dates make these paths; a stored path read back from the database is still checked
to stay inside the recordings dir.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath


class UnsafePath(ValueError):
    """A stored path that would leave the recordings dir."""


@dataclass(frozen=True)
class Locations:
    spool_dir: str  # Asterisk's view ("" = Asterisk's own monitor dir, relative names)
    local_spool_dir: Path  # the bridge's view of the same directory
    recordings_dir: Path


def stored_relpath(call_id: int, started_at: datetime, suffix: str = ".wav") -> str:
    if not isinstance(call_id, int) or isinstance(call_id, bool) or call_id <= 0:
        raise ValueError(f"a call id is a positive integer, got {call_id!r}")
    if started_at.tzinfo is None:
        raise ValueError("naive datetime")
    day = started_at.astimezone(UTC)
    return str(PurePosixPath(f"{day:%Y}", f"{day:%m}", f"{day:%d}", f"{call_id}{suffix}"))


def resolve_stored(recordings_dir: Path, relpath: str) -> Path:
    """The absolute path of a stored file, refusing anything outside the recordings dir."""
    rel = PurePosixPath(relpath)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise UnsafePath(f"stored path leaves the recordings dir: {relpath!r}")
    root = recordings_dir.resolve()
    full = (root / Path(*rel.parts)).resolve()
    if not full.is_relative_to(root):
        raise UnsafePath(f"stored path leaves the recordings dir: {relpath!r}")
    return full
