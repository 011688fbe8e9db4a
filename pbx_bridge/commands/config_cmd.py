"""`pbx-bridge config check`: validate and print the effective configuration, secrets masked.
`pbx-bridge config init DIR`: write the commented sample configuration, a `.env` template for
the secrets and the Asterisk samples into DIR (an installed bridge's /etc/pbx-bridge)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pbx_bridge.commands.context import settings_from_args
from pbx_bridge.config import dump_toml, effective_config


def register(sub: Any) -> None:
    parser = sub.add_parser("config", help="configuration tools")
    inner = parser.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = inner.add_parser("check", help="validate and print the effective configuration")
    check.set_defaults(handler=run_check)
    init = inner.add_parser(
        "init", help="write a commented configuration, a .env template and Asterisk samples",
        description="Writes DIR/pbx-bridge.toml (every key, commented), DIR/.env (mode 600: "
                    "the secrets, for systemd's EnvironmentFile) and DIR/asterisk/ (what to "
                    "merge into Asterisk's configuration). Never overwrites a file.")
    init.add_argument("dir", metavar="DIR", help="e.g. /etc/pbx-bridge")
    init.add_argument("--data-dir", metavar="PATH",
                      help="[server] data_dir written into the file (default: DIR/data; "
                           "/var/lib/pbx-bridge for the systemd units)")
    init.set_defaults(handler=run_init)


def run_check(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    print(f"# {settings.source}: OK")
    print(dump_toml(effective_config(settings)), end="")
    return 0


def run_init(args: argparse.Namespace) -> int:
    from pbx_bridge.errors import UserError
    from pbx_bridge.install.sample_config import AlreadyThere, init

    target = Path(args.dir)
    if target.exists() and not target.is_dir():
        raise UserError(f"{target}: exists and is not a directory")
    try:
        written = init(target, Path(args.data_dir) if args.data_dir else None)
    except AlreadyThere as exc:
        raise UserError(f"config init: already there, nothing written: {exc}") from None
    except PermissionError as exc:
        raise UserError(f"config init: {exc.filename}: permission denied") from None
    print(f"wrote {written.config}")
    print(f"wrote {written.env} (mode 600: put the secrets there)")
    print(f"wrote {len(written.asterisk)} Asterisk samples in {written.config.parent / 'asterisk'}")
    print(f"next: edit them, then `pbx-bridge --config {written.config} db upgrade` and `serve`")
    return 0
