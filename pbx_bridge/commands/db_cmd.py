"""`pbx-bridge db upgrade|current`: schema migrations."""

from __future__ import annotations

import argparse
from typing import Any

from pbx_bridge.commands.context import database, settings_from_args
from pbx_bridge.db import migrate


def register(sub: Any) -> None:
    parser = sub.add_parser("db", help="database schema")
    inner = parser.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    up = inner.add_parser("upgrade", help="migrate the schema to the latest version")
    up.add_argument("revision", nargs="?", default="head")
    up.set_defaults(handler=run_upgrade)
    cur = inner.add_parser("current", help="print the schema version")
    cur.set_defaults(handler=run_current)


async def run_upgrade(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    async with database(settings, check_schema=False) as engine:
        before = await migrate.current_revision(engine)
        await migrate.upgrade(engine, args.revision)
        after = await migrate.current_revision(engine)
    print(f"database schema: {before or 'empty'} -> {after}")
    return 0


async def run_current(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    async with database(settings, check_schema=False) as engine:
        current = await migrate.current_revision(engine)
    head = migrate.head_revision()
    print(f"{current or 'empty'} (latest: {head})")
    return 0 if current == head else 1
