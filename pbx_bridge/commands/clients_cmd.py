"""`pbx-bridge clients import|export` (client cards as CSV) and `pbx-bridge outbox list|dead|retry`."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from crm_sync import outbox
from crm_sync.csv_io import CsvImportError, export_csv, import_csv
from pbx_bridge.commands.context import database, settings_from_args
from pbx_bridge.crm_connectors.options import match_settings


def register(sub: Any) -> None:
    clients = sub.add_parser("clients", help="client cards: CSV import and export")
    inner = clients.add_subparsers(dest="clients_command", metavar="ACTION", required=True)
    imp = inner.add_parser("import", help="import client cards from a CSV file")
    imp.add_argument("file", metavar="FILE.csv")
    imp.add_argument("--map", action="append", default=[], metavar="COLUMN=FIELD",
                     help="take FIELD (name, company, phone, email, responsible, source, tags, notes) "
                          "from COLUMN; repeatable; other columns are recognised by their header")
    imp.add_argument("--dry-run", action="store_true", help="check and count, write nothing")
    imp.add_argument("--encoding", choices=["auto", "utf-8", "cp1251"], default="auto")
    imp.add_argument("--allow-unparsed", action="store_true",
                     help="keep numbers that do not parse (matched on their last digits) instead of "
                          "rejecting the row")
    imp.add_argument("--no-progress", action="store_true", help="no progress bar")
    imp.set_defaults(handler=run_import)
    exp = inner.add_parser("export", help="export every client card as CSV (UTF-8)")
    exp.add_argument("file", nargs="?", default="-", metavar="FILE", help="default: standard output")
    exp.set_defaults(handler=run_export)

    box = sub.add_parser("outbox", help="what is waiting to be sent to the external CRM")
    box_inner = box.add_subparsers(dest="outbox_command", metavar="ACTION", required=True)
    lst = box_inner.add_parser("list", help="items not delivered yet (add --all for every item)")
    lst.add_argument("--all", action="store_true")
    lst.add_argument("--json", action="store_true")
    lst.add_argument("--limit", type=int, default=100)
    lst.set_defaults(handler=run_outbox_list, state=None)
    dead = box_inner.add_parser("dead", help="dead letters: items that gave up")
    dead.add_argument("--json", action="store_true")
    dead.add_argument("--limit", type=int, default=100)
    dead.set_defaults(handler=run_outbox_list, state="dead", all=False)
    retry = box_inner.add_parser("retry", help="re-queue a dead letter for an immediate try")
    retry.add_argument("id", type=int)
    retry.set_defaults(handler=run_outbox_retry)


def _parse_map(items: list[str]) -> dict[str, str]:
    from pbx_bridge.errors import UserError

    mapping: dict[str, str] = {}
    for item in items:
        column, sep, target = item.partition("=")
        if not sep or not column.strip() or not target.strip():
            raise UserError(f"--map {item!r}: expected COLUMN=FIELD")
        mapping[column.strip()] = target.strip()
    return mapping


async def run_import(args: argparse.Namespace) -> int:
    from pbx_bridge.errors import UserError

    settings = settings_from_args(args)
    mapping = _parse_map(args.map)
    try:
        # A one-shot command: nothing else runs on this event loop, blocking reads are fine.
        data = Path(args.file).read_bytes()  # noqa: ASYNC240
    except FileNotFoundError:
        raise UserError(f"{args.file}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{args.file}: is a directory") from None
    async with database(settings) as engine:
        try:
            report = await import_csv(
                engine, data, match_settings(settings), datetime.now(UTC), mapping=mapping,
                encoding=args.encoding, dry_run=args.dry_run, allow_unparsed=args.allow_unparsed,
                progress=not args.no_progress and sys.stderr.isatty(),
            )
        except CsvImportError as exc:
            raise UserError(f"{args.file}: {exc}; nothing was imported") from None
    mode = " (dry run: nothing written)" if report.dry_run else ""
    columns = ", ".join(f"{col!r}->{target}" for col, target in report.columns.items())
    print(f"{args.file}: encoding {report.encoding}, columns {columns}{mode}")
    if report.ignored_columns:
        print(f"ignored columns: {', '.join(repr(c) for c in report.ignored_columns)}")
    verb = "would be" if report.dry_run else ""
    print(f"rows: {report.rows}, created {verb} {report.created}, merged {verb} {report.merged}, "
          f"rejected {len(report.rejected)}".replace("  ", " "))
    for rejected in report.rejected:
        print(f"  line {rejected.line}: {rejected.reason}")
    # Non-zero when some rows were rejected (the others were imported), for scripts.
    return 1 if report.rejected else 0


async def run_export(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    async with database(settings) as engine:
        # A one-shot command: nothing else runs on this event loop, blocking writes are fine.
        target: Any = (
            nullcontext(sys.stdout)
            if args.file == "-"
            else open(args.file, "w", encoding="utf-8", newline="")  # noqa: ASYNC230
        )
        with target as out:
            stream: TextIO = out
            async with engine.connect() as conn:
                count = await export_csv(conn, stream)
    if args.file != "-":
        print(f"{count} client cards written to {args.file}")
    return 0


async def run_outbox_list(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    state: outbox.State = args.state or ("all" if args.all else "pending")
    async with database(settings) as engine, engine.connect() as conn:
        items = await outbox.list_items(conn, state, limit=args.limit)
    if args.json:
        print(json.dumps([i.to_dict() for i in items], ensure_ascii=False, indent=1))
        return 0
    if not items:
        print({"pending": "nothing waiting", "dead": "no dead letters"}.get(state, "outbox is empty"))
        return 0
    print(f"{'id':>6}  {'state':9} {'kind':8} {'client':22} {'tries':>5}  {'next try / done':24} last error")
    for item in items:
        st = "delivered" if item.delivered_at else ("dead" if item.dead else "pending")
        when = item.to_dict()["delivered_at"] or item.to_dict()["next_attempt_at"]
        print(f"{item.id:>6}  {st:9} {item.kind:8} {item.client_key:22} {item.attempts:>5}  {when:24} "
              f"{(item.last_error or '')[:60]}")
    return 0


async def run_outbox_retry(args: argparse.Namespace) -> int:
    from pbx_bridge.errors import UserError

    settings = settings_from_args(args)
    async with database(settings) as engine:
        try:
            async with engine.begin() as conn:
                item = await outbox.retry(conn, args.id, datetime.now(UTC))
        except outbox.OutboxItemNotFound as exc:
            raise UserError(str(exc)) from None
    print(f"outbox item {item.id} ({item.kind}, {item.client_key}) re-queued")
    return 0
