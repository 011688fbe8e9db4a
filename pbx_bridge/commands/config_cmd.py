"""`pbx-bridge config check`: validate and print the effective configuration, secrets masked."""

from __future__ import annotations

import argparse
from typing import Any

from pbx_bridge.commands.context import settings_from_args
from pbx_bridge.config import dump_toml, effective_config


def register(sub: Any) -> None:
    parser = sub.add_parser("config", help="configuration tools")
    inner = parser.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = inner.add_parser("check", help="validate and print the effective configuration")
    check.set_defaults(handler=run_check)


def run_check(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    print(f"# {settings.source}: OK")
    print(dump_toml(effective_config(settings)), end="")
    return 0
