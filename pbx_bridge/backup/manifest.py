"""The manifest of a backup: what it holds and the SHA-256 of every file, written last (a
directory without one is an unfinished backup)."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

MANIFEST_NAME = "manifest.json"
FORMAT = 1
CHUNK = 1 << 20

FileKind = Literal["database", "recording", "compressed", "signing_key"]


class BackupError(Exception):
    """A backup or restore that cannot go on, worded for the administrator."""


@dataclass
class FileEntry:
    path: str  # relative to the backup directory, POSIX separators
    kind: FileKind
    size: int
    sha256: str
    call_id: int | None = None


@dataclass
class TranscriptEntry:
    call_id: int
    sha256: str


@dataclass
class Manifest:
    created_at: str
    version: str  # pbx-bridge's
    schema: str  # the database's Alembic revision
    database: Literal["sqlite", "postgresql"]
    counts: dict[str, int]
    files: list[FileEntry] = field(default_factory=list)
    transcripts: list[TranscriptEntry] = field(default_factory=list)
    # Recordings the database lists as stored whose file was not there (deleted by retention
    # after the snapshot, or lost before it): named so that the restore can say so.
    missing: list[str] = field(default_factory=list)
    format: int = FORMAT

    def write(self, directory: Path) -> None:
        text = json.dumps(asdict(self), ensure_ascii=False, indent=1)
        tmp = directory / (MANIFEST_NAME + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.rename(directory / MANIFEST_NAME)

    @classmethod
    def read(cls, directory: Path) -> Manifest:
        path = directory / MANIFEST_NAME
        try:
            data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise BackupError(f"{directory}: no {MANIFEST_NAME}: not a pbx-bridge backup, or one "
                              "that did not finish") from None
        except (OSError, ValueError) as exc:
            raise BackupError(f"{path}: unreadable ({exc})") from None
        if data.get("format") != FORMAT:
            raise BackupError(f"{path}: backup format {data.get('format')!r}, this pbx-bridge "
                              f"reads format {FORMAT}")
        try:
            return cls(**{**data, "files": [FileEntry(**f) for f in data["files"]],
                          "transcripts": [TranscriptEntry(**t) for t in data["transcripts"]]})
        except (KeyError, TypeError) as exc:
            raise BackupError(f"{path}: not a manifest this pbx-bridge wrote ({exc})") from None


def sha256_file(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def copy_hashing(source: Path, target: Path) -> tuple[int, str]:
    """Copy one file, hashing what was read: the hash is of the bytes the copy holds."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    with source.open("rb") as src, target.open("xb") as dst:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
            dst.write(chunk)
            size += len(chunk)
    shutil.copystat(source, target)
    return size, digest.hexdigest()
