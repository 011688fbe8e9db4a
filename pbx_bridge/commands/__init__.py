"""Command groups of the CLI; each module has `register(subparsers)`."""

from pbx_bridge.commands import config_cmd, db_cmd, serve_cmd, transcribe_cmd

COMMAND_MODULES = [config_cmd, db_cmd, serve_cmd, transcribe_cmd]
