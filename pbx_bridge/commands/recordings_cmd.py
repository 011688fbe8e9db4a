"""`pbx-bridge recordings list|retry|retention`: look at recordings and run their jobs by hand."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from pbx_bridge.commands.context import database, settings_from_args
from pbx_bridge.db.engine import make_sessionmaker
from pbx_bridge.recording.service import RecordingService
from pbx_bridge.runtime import Runtime
from recordings import catalog
from recordings.schema import STATES


def register(sub: Any) -> None:
    parser = sub.add_parser("recordings", help="call recordings")
    inner = parser.add_subparsers(dest="recordings_command", metavar="ACTION", required=True)
    ls = inner.add_parser("list", help="recent recordings and their state")
    ls.add_argument("--state", choices=STATES)
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    ls.set_defaults(handler=run_list)
    retry = inner.add_parser("retry", help="queue a missing / truncated / failed recording again")
    retry.add_argument("call_id", type=int)
    retry.set_defaults(handler=run_retry)
    ret = inner.add_parser("retention", help="delete expired recordings now (legal holds kept)")
    ret.set_defaults(handler=run_retention)


async def run_list(args: argparse.Namespace) -> int:
    from pbx_bridge.errors import UserError

    if args.limit <= 0:
        raise UserError("--limit must be a positive number")
    settings = settings_from_args(args)
    async with database(settings) as engine, engine.connect() as conn:
        rows = await catalog.listing(conn, args.state, args.limit)
    for row in rows:
        if args.json:
            print(json.dumps(row.to_dict(), ensure_ascii=False))
        else:
            duration = "-" if row.duration_seconds is None else f"{row.duration_seconds:.1f}s"
            print(f"{row.call_id:>8}  {row.state:<10} {duration:>8}  {row.created_at:%Y-%m-%d %H:%M}  "
                  f"{row.last_error or ''}".rstrip())
    return 0


async def run_retry(args: argparse.Namespace) -> int:
    """Queue only: the running server's conversion job does the work, so two processes never
    convert the same files at once."""
    from pbx_bridge.errors import UserError

    settings = settings_from_args(args)
    async with database(settings) as engine, engine.begin() as conn:
        row = await catalog.get_by_call(conn, args.call_id)
        if row is None:
            raise UserError(f"call {args.call_id} has no recording")
        if not await catalog.requeue(conn, args.call_id, datetime.now(UTC)):
            raise UserError(f"the recording of call {args.call_id} is {row.state}: nothing to retry")
    print(f"call {args.call_id}: queued for conversion (was {row.state}); "
          "the running server converts it within seconds")
    return 0


async def run_retention(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    async with database(settings) as engine:
        service = RecordingService(Runtime(settings=settings, engine=engine,
                                           sessions=make_sessionmaker(engine)))
        report = await service.run_retention()
    print(f"deleted {len(report.deleted)}, kept under legal hold {len(report.held)}, "
          f"problems {len(report.errors)}")
    for problem in report.errors:
        print(f"  {problem}")
    return 0
