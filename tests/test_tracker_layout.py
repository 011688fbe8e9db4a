"""The tracker's parts stay where pbx_bridge/calls/tracking/__init__.py says they are: each module
imports only the ones below it, and every transfer the call record lists is made in
transfers.py (issue 17: a telephony engineer finds the transfer logic in one place)."""

from __future__ import annotations

import ast
from pathlib import Path

import pbx_bridge.calls.tracking as tracking
from pbx_bridge.calls import tracker

PACKAGE = Path(tracking.__file__).parent
# Lowest first, as the package docstring lists them.
ORDER = ["state", "rules", "reporting", "answering", "originates", "channels", "transfers",
         "dials", "bridges", "cel", "resync"]


def _tracking_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("pbx_bridge.calls.tracking."):
                found.add(node.module.rsplit(".", 1)[1])
            elif node.module == "pbx_bridge.calls.tracking":
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name.rsplit(".", 1)[1] for alias in node.names
                         if alias.name.startswith("pbx_bridge.calls.tracking."))
    return found


def test_every_module_is_in_the_documented_order() -> None:
    modules = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
    assert modules == sorted(ORDER)
    doc = tracking.__doc__ or ""
    assert [m for m in ORDER if f"- {m}:" in doc] == ORDER  # listed, in this order
    for m in ORDER:
        assert (PACKAGE / f"{m}.py").read_text().lstrip().startswith('"""'), m


def test_modules_import_only_the_ones_below() -> None:
    for i, m in enumerate(ORDER):
        imported = _tracking_imports(PACKAGE / f"{m}.py")
        above = sorted(imported - set(ORDER[:i]))
        assert not above, f"{m} imports {above}, which are not below it"


def test_transfers_are_made_in_transfers_only() -> None:
    makers = []
    for path in [*PACKAGE.glob("*.py"), Path(tracker.__file__)]:
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id == "Transfer"):
                makers.append(path.stem)
    assert makers and set(makers) == {"transfers"}


def test_transfer_events_go_to_transfers() -> None:
    handlers = tracker._HANDLERS
    for event in ("BlindTransfer", "AttendedTransfer", "Pickup"):
        assert handlers[event].__module__ == "pbx_bridge.calls.tracking.transfers", event
