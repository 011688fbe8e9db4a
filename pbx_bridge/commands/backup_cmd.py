"""`pbx-bridge backup DIR` (while serve runs) and `pbx-bridge restore DIR` (into an empty data
directory or database): see pbx_bridge.backup."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pbx_bridge.commands.context import settings_from_args


def register(sub: Any) -> None:
    backup = sub.add_parser(
        "backup", help="back up the database, recordings and transcripts (serve may run)",
        description="Writes DIR (new or empty): the database at one moment (SQLite's online "
                    "backup API; PostgreSQL: pg_dump of one snapshot), every recording file that "
                    "moment's database lists, and manifest.json with the SHA-256 of each file "
                    "and transcript. Exit 1 when a recording on disk no longer matches the "
                    "SHA-256 recorded when it was stored.")
    backup.add_argument("dir", metavar="DIR")
    backup.set_defaults(handler=run_backup)
    restore = sub.add_parser(
        "restore", help="restore a backup into an empty data directory (or empty database)",
        description="Checks every file of DIR against its manifest first (a damaged backup "
                    "restores nothing), then writes the database and the recordings where the "
                    "configuration says, and checks the restored database against the manifest. "
                    "serve must not run.")
    restore.add_argument("dir", metavar="DIR")
    restore.set_defaults(handler=run_restore)


async def run_backup(args: argparse.Namespace) -> int:
    from pbx_bridge.backup.backup import make_backup
    from pbx_bridge.backup.manifest import BackupError
    from pbx_bridge.errors import UserError

    settings = settings_from_args(args)
    try:
        report = await make_backup(settings, Path(args.dir))
    except BackupError as exc:
        raise UserError(f"backup: {exc}") from None
    m = report.manifest
    recordings = sum(1 for f in m.files if f.kind == "recording")
    print(f"backup of schema {m.schema} in {report.directory}: {m.counts['calls']} calls, "
          f"{m.counts['clients']} clients, {recordings} recording files, {len(m.transcripts)} "
          f"transcripts ({report.seconds:.1f} s)")
    for missing in m.missing:
        print(f"not found (deleted since, or lost): {missing}")
    for damaged in report.damaged:
        print(f"damaged: {damaged}")
    return 1 if report.damaged else 0


async def run_restore(args: argparse.Namespace) -> int:
    from pbx_bridge.backup.manifest import BackupError
    from pbx_bridge.backup.restore import restore
    from pbx_bridge.errors import UserError

    settings = settings_from_args(args)
    try:
        report = await restore(settings, Path(args.dir))
    except BackupError as exc:
        raise UserError(f"restore: {exc}") from None
    m = report.manifest
    print(f"restored {m.counts['calls']} calls, {m.counts['clients']} clients, {report.files} files "
          f"and {len(m.transcripts)} transcripts, every SHA-256 checked")
    for warning in report.warnings:
        print(f"warning: {warning}")
    if m.schema != report.head:
        print(f"the schema is {m.schema}: run `pbx-bridge db upgrade` before `serve`")
    return 0
