"""Failures a user can act on, shared by every layer: the CLI prints them as one line (exit 1).

Below everything (it imports nothing), so the bridge's start-up and the database opening can raise
it without importing the command line that reports it.
"""

from __future__ import annotations


class UserError(Exception):
    """A failure the user can act on: printed as one line, exit code 1."""
