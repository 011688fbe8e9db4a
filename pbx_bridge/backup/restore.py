"""`pbx-bridge restore DIR`: into an empty data directory (or an empty PostgreSQL database)
only. Every file of the backup is checked against the manifest before anything is written; after
the copy, the restored database is checked against the manifest too: its counts, each
recording's SHA-256 and each transcript's."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from pbx_bridge.backup import contents
from pbx_bridge.backup.backup import RECORDINGS, SIGNING_KEY
from pbx_bridge.backup.database_copy import restore_database
from pbx_bridge.backup.manifest import BackupError, Manifest, copy_hashing, sha256_file
from pbx_bridge.config import Settings
from pbx_bridge.db import migrate
from pbx_bridge.db.engine import make_engine
from pbx_bridge.recording.service import locations_from_config
from recordings.storage import UnsafePath, resolve_stored

MAX_LISTED = 5


@dataclass
class RestoreReport:
    manifest: Manifest
    files: int
    head: str | None
    warnings: list[str] = field(default_factory=list)


def _verify_backup(source: Path, manifest: Manifest) -> None:
    bad = []
    for entry in manifest.files:
        path = PurePosixPath(entry.path)
        recording = entry.kind in ("recording", "compressed")
        if path.is_absolute() or ".." in path.parts or recording != (path.parts[:1] == (RECORDINGS,)):
            # The manifest is data from disk: no path may lead out of where it belongs.
            raise BackupError(f"{source}: the manifest names an unsafe path {entry.path!r}, "
                              "nothing restored")
        try:
            size, digest = sha256_file(source / entry.path)
        except FileNotFoundError:
            bad.append(f"{entry.path}: missing")
            continue
        if (size, digest) != (entry.size, entry.sha256):
            bad.append(f"{entry.path}: SHA-256 differs from the manifest")
    if bad:
        more = f" (and {len(bad) - MAX_LISTED} more)" if len(bad) > MAX_LISTED else ""
        raise BackupError(f"{source}: the backup is damaged, nothing restored: "
                          + "; ".join(bad[:MAX_LISTED]) + more)


async def restore(settings: Settings, source: Path) -> RestoreReport:
    manifest = Manifest.read(source)
    head = migrate.head_revision()
    known = {s.revision for s in migrate.script_directory().walk_revisions()}
    if manifest.schema not in known:
        raise BackupError(f"the backup's schema {manifest.schema} is newer than this pbx-bridge "
                          f"knows (latest {head}): restore with pbx-bridge {manifest.version} or later")
    await asyncio.to_thread(_verify_backup, source, manifest)
    recordings_dir = locations_from_config(settings.recordings, settings.data_path).recordings_dir
    if recordings_dir.exists() and any(recordings_dir.iterdir()):
        raise BackupError(f"{recordings_dir} is not empty: restore only into an empty data "
                          "directory (move the old one aside)")
    await restore_database(settings.database_url, source, manifest.database)
    copied = await asyncio.to_thread(_copy_files, source, manifest, recordings_dir,
                                     settings.data_path)
    warnings = [f"{m}: was not in the backup (deleted or lost before it was taken)"
                for m in manifest.missing]
    warnings += await _check_restored(settings, manifest, recordings_dir)
    return RestoreReport(manifest=manifest, files=copied, head=head, warnings=warnings)


def _copy_files(source: Path, manifest: Manifest, recordings_dir: Path, data_dir: Path) -> int:
    copied = 0
    for entry in manifest.files:
        if entry.kind in ("recording", "compressed"):
            relative = PurePosixPath(entry.path).relative_to(RECORDINGS)
            try:
                # A manifest is data from disk: a path must not lead out of the recordings dir.
                target = resolve_stored(recordings_dir, str(relative))
            except UnsafePath:
                raise BackupError(f"{entry.path}: leaves the recordings directory") from None
        elif entry.kind == "signing_key":
            target = data_dir / SIGNING_KEY
        else:
            continue
        _size, digest = copy_hashing(source / entry.path, target)
        if digest != entry.sha256:
            raise BackupError(f"{entry.path}: changed while being restored")
        if entry.kind == "signing_key":
            os.chmod(target, 0o600)
        copied += 1
    return copied


async def _check_restored(settings: Settings, manifest: Manifest, recordings_dir: Path) -> list[str]:
    engine = make_engine(settings.database_url)
    try:
        async with engine.connect() as conn:
            counts = await contents.counts(conn)
            digests = await contents.transcript_digests(conn)
            stored = await contents.stored_files(conn)
    finally:
        await engine.dispose()
    problems = []
    if counts != manifest.counts:
        problems.append(f"counts {counts} differ from the backup's {manifest.counts}")
    expected = {t.call_id: t.sha256 for t in manifest.transcripts}
    if digests != expected:
        wrong = sorted(c for c in expected.keys() | digests.keys() if expected.get(c) != digests.get(c))
        problems.append(f"transcripts of calls {wrong[:MAX_LISTED]} differ from the backup's")
    in_backup = {e.path: e for e in manifest.files}
    for item in stored:
        entry = in_backup.get(str(PurePosixPath(RECORDINGS, item.relpath)))
        if entry is None:
            continue  # listed in manifest.missing, warned about
        if item.sha256 is not None and entry.sha256 != item.sha256:
            problems.append(f"call {item.call_id}: the restored recording's SHA-256 differs "
                            "from the database's")
    if problems:
        raise BackupError("restored, but it does not match the backup: " + "; ".join(problems))
    return []
