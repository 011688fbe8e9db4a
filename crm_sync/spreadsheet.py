"""Cells a spreadsheet must not run: one rule for every CSV the project writes (the clients
export, the reports' CSV in the API and the UI, the call journal's export).

A cell starting with = + - @ is a formula to Excel and LibreOffice (`=HYPERLINK(...)` sends the
row to a stranger's server when clicked; `=cmd|...` runs a program through DDE), and a leading tab
or CR hides the same trick. Such a cell is prefixed with an apostrophe, as OWASP advises, so it is
shown as the text it is. Phone numbers (+7...) are prefixed too: a spreadsheet would otherwise
turn them into numbers (7,9E+10) and drop the plus. The clients import takes the apostrophe off
again, so an export imports back unchanged.
"""

from __future__ import annotations

from typing import Any

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: str) -> str:
    return "'" + value if value.startswith(FORMULA_START) else value


def safe_row(values: list[Any]) -> list[Any]:
    """The row with every text cell made safe (numbers and the rest as they are)."""
    return [safe_cell(v) if isinstance(v, str) else v for v in values]


def unescape_cell(value: str) -> str:
    """What safe_cell() was given: the apostrophe it added comes off."""
    return value[1:] if value.startswith("'") and value[1:].startswith(FORMULA_START) else value
