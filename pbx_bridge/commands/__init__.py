"""Command groups of the CLI; each module has `register(subparsers)`."""

from pbx_bridge.commands import backup_cmd
from pbx_bridge.commands import calls_cmd
from pbx_bridge.commands import cel_cmd
from pbx_bridge.commands import clients_cmd
from pbx_bridge.commands import config_cmd
from pbx_bridge.commands import crm_cmd
from pbx_bridge.commands import db_cmd
from pbx_bridge.commands import recordings_cmd
from pbx_bridge.commands import serve_cmd
from pbx_bridge.commands import simulate_cmd
from pbx_bridge.commands import tokens_cmd
from pbx_bridge.commands import transcribe_cmd
from pbx_bridge.commands import users_cmd

COMMAND_MODULES = [
    config_cmd,
    db_cmd,
    serve_cmd,
    calls_cmd,
    backup_cmd,
    cel_cmd,
    clients_cmd,
    recordings_cmd,
    simulate_cmd,
    tokens_cmd,
    transcribe_cmd,
    users_cmd,
    crm_cmd,
]
