"""What every command needs: the settings and, for most, the database."""

from __future__ import annotations

import argparse
import os

from pbx_bridge.config import Settings, config_path_from, load_settings
from pbx_bridge.db.connect import database
from pbx_bridge.log import setup_logging

__all__ = ["database", "settings_from_args"]


def settings_from_args(args: argparse.Namespace, *, service: bool = False) -> Settings:
    """`service`: a long-running process (serve, worker) logs to standard output."""
    explicit = bool(getattr(args, "config", None) or os.environ.get("PBX_BRIDGE_CONFIG"))
    path = config_path_from(getattr(args, "config", None), os.environ)
    settings = load_settings(path, required=explicit)
    setup_logging(settings.logging.level, settings.logging.format, stdout=service)
    return settings
