"""`pbx-bridge backup DIR`, safe while `serve` runs: the database at one moment, then every
recording file that moment's database lists (hashed as copied, checked against the SHA-256 the
bridge recorded when it stored the WAV), the signed-link key, and the manifest, written last."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from sqlalchemy.ext.asyncio import AsyncConnection

from pbx_bridge import __version__
from pbx_bridge.backup import contents
from pbx_bridge.backup.database_copy import snapshot
from pbx_bridge.backup.manifest import (
    BackupError,
    FileEntry,
    Manifest,
    TranscriptEntry,
    copy_hashing,
    sha256_file,
)
from pbx_bridge.config import Settings
from pbx_bridge.db import migrate
from pbx_bridge.recording.service import locations_from_config
from recordings.storage import UnsafePath, resolve_stored

RECORDINGS = "recordings"
SIGNING_KEY = "recording-links.key"


@dataclass
class Snapshot:
    schema: str
    files: list[contents.StoredFile]
    transcripts: dict[int, str]
    counts: dict[str, int]


@dataclass
class BackupReport:
    directory: Path
    manifest: Manifest
    seconds: float
    damaged: list[str] = field(default_factory=list)


async def _read(conn: AsyncConnection) -> Snapshot:
    schema = await migrate.current_revision_of(conn)
    return Snapshot(schema=schema or "", files=await contents.stored_files(conn),
                    transcripts=await contents.transcript_digests(conn),
                    counts=await contents.counts(conn))


def prepare_target(target: Path) -> None:
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise BackupError(f"{target}: exists and is not an empty directory (a backup never "
                          "overwrites another)")
    target.mkdir(parents=True, exist_ok=True)


async def make_backup(settings: Settings, target: Path) -> BackupReport:
    prepare_target(target)
    started = asyncio.get_running_loop().time()
    db_file, snap = await snapshot(settings.database_url, target, _read)
    if not snap.schema:
        raise BackupError("the database has no schema yet (run `pbx-bridge db upgrade`)")
    size, digest = await asyncio.to_thread(sha256_file, target / db_file)
    manifest = Manifest(
        created_at=datetime.now(UTC).isoformat(timespec="seconds"), version=__version__,
        schema=snap.schema, database="sqlite" if db_file.endswith(".sqlite3") else "postgresql",
        counts=snap.counts,
        files=[FileEntry(path=db_file, kind="database", size=size, sha256=digest)],
        transcripts=[TranscriptEntry(call_id=c, sha256=h) for c, h in snap.transcripts.items()])
    recordings_dir = locations_from_config(settings.recordings, settings.data_path).recordings_dir
    damaged = await asyncio.to_thread(_copy_recordings, recordings_dir, snap.files, target, manifest)
    key = settings.data_path / SIGNING_KEY
    if not settings.recordings.signing_key and key.is_file():
        size, digest = await asyncio.to_thread(copy_hashing, key, target / SIGNING_KEY)
        manifest.files.append(FileEntry(path=SIGNING_KEY, kind="signing_key", size=size,
                                        sha256=digest))
    manifest.write(target)
    return BackupReport(directory=target, manifest=manifest, damaged=damaged,
                        seconds=asyncio.get_running_loop().time() - started)


def _copy_recordings(recordings_dir: Path, files: list[contents.StoredFile], target: Path,
                     manifest: Manifest) -> list[str]:
    damaged = []
    for stored in files:
        try:
            source = resolve_stored(recordings_dir, stored.relpath)
        except UnsafePath:
            damaged.append(f"call {stored.call_id}: unsafe stored path {stored.relpath!r}")
            continue
        relative = str(PurePosixPath(RECORDINGS, stored.relpath))
        try:
            size, digest = copy_hashing(source, target / relative)
        except FileNotFoundError:
            # Deleted by retention since the snapshot, or lost before it: said, not fatal.
            manifest.missing.append(relative)
            continue
        if stored.sha256 is not None and digest != stored.sha256:
            damaged.append(f"call {stored.call_id}: {stored.relpath} differs from the SHA-256 "
                           "recorded when it was stored (damaged on disk)")
        manifest.files.append(FileEntry(path=relative, kind="compressed" if stored.compressed
                                        else "recording", size=size, sha256=digest,
                                        call_id=stored.call_id))
    return damaged
