"""`pbx-bridge calls list`: the call log from the database, as a table or JSON records."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from pbx_bridge.calls import store
from pbx_bridge.calls.record import CallRecord
from pbx_bridge.commands.cel_cmd import register_backfill
from pbx_bridge.commands.context import database, settings_from_args

MAX_LIMIT = 10_000


def register(sub: Any) -> None:
    parser = sub.add_parser("calls", help="the call log")
    inner = parser.add_subparsers(dest="calls_command", metavar="ACTION", required=True)
    lst = inner.add_parser("list", help="list calls, newest first")
    lst.add_argument("--limit", type=_limit, default=50, help="how many (default 50)")
    lst.add_argument("--live", action="store_true", help="only calls in progress")
    lst.add_argument("--pbx", help="only this PBX")
    lst.add_argument("--json", action="store_true", help="one JSON array of call records")
    lst.set_defaults(handler=run_list)
    register_backfill(inner)


def _limit(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 1 <= value <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"must be 1-{MAX_LIMIT}")
    return value


async def run_list(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    async with database(settings) as engine, engine.connect() as conn:
        records = await store.list_calls(conn, limit=args.limit, live=True if args.live else None,
                                         pbx=args.pbx)
    if args.json:
        print(json.dumps([r.to_dict() for r in records], ensure_ascii=False, indent=2))
    else:
        print(format_table(records))
    return 0


COLUMNS = ("id", "started (UTC)", "dir", "customer", "did/dialled", "operator", "status",
           "wait", "talk", "from")


def _row(rec: CallRecord) -> list[str]:
    started = datetime.fromtimestamp(rec.started_at, UTC).strftime("%Y-%m-%d %H:%M:%S")
    customer = rec.customer_number or ""
    if rec.customer_name:
        customer = f"{customer} ({rec.customer_name})" if customer else rec.customer_name
    status: str = rec.status or "live"
    if rec.missed:
        status += " (missed)"
    if rec.ended_during_outage:
        status += " *"
    operator = rec.operator or ""
    rung = [op for op in rec.operators_rung if op != rec.operator]
    if rung:
        operator = f"{operator} (rung {', '.join(rung)})".strip()
    return [str(rec.id or ""), started, rec.direction, customer, rec.did or rec.dialled or "",
            operator, status, _seconds(rec.wait_seconds), _seconds(rec.talk_seconds),
            "" if rec.source == "ami" else rec.source]


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def format_table(records: list[CallRecord]) -> str:
    if not records:
        return "no calls"
    rows = [list(COLUMNS)] + [_row(r) for r in records]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if any(r.ended_during_outage for r in records):
        lines.append("* ended while the bridge was disconnected: end time is the last one known")
    if any(r.source != "ami" for r in records):
        lines.append("from cel: heard of only from Asterisk's CEL (the bridge was not listening); "
                     "ami+cel: begun live, completed from CEL")
    return "\n".join(lines)
