"""`pbx-bridge crm check`: the native CRM connector's credentials and user mapping."""

from __future__ import annotations

import argparse
from typing import Any

from pbx_bridge.commands.context import database, settings_from_args
from pbx_bridge.crm_connectors.check import check


def register(sub: Any) -> None:
    parser = sub.add_parser("crm", help="the external CRM connector (Bitrix24, Kommo)")
    inner = parser.add_subparsers(dest="crm_command", metavar="ACTION", required=True)
    run = inner.add_parser("check", help="try the credentials and the user mapping, say what is missing")
    run.set_defaults(handler=run_check)


async def run_check(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    async with database(settings) as engine:
        report = await check(settings, engine)
    for kind, text in report.lines:
        print(f"{kind:8} {text}")
    print("complete" if report.complete else "something is missing (see above)")
    return 0 if report.complete else 1
