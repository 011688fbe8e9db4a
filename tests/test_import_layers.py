"""The import layers (issue 17): `lint-imports` with the contracts in pyproject.toml keeps the tree
free of cycles and upward imports, and the contracts do catch a violation (checked on a copy of
the real tree with one bad import added, so this is not a test that cannot fail)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    # --no-cache: a copy of the tree must be read afresh, never from the cache of the real one.
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--config", str(root / "pyproject.toml")],
                          cwd=root, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=120)


def test_the_tree_keeps_its_import_contracts() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.fixture(scope="module")
def tree_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("tree")
    shutil.copy(ROOT / "pyproject.toml", copy)
    for package in ("pbx_bridge", "crm_sync", "recordings"):
        shutil.copytree(ROOT / package, copy / package, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    return copy


@pytest.mark.parametrize(("module", "bad_import", "contract"), [
    # Upward: the core importing the command line (the 16-file cycle of issue 17 began so).
    ("pbx_bridge/db/connect.py", "import pbx_bridge.cli", "pbx_bridge's layers"),
    # Upward: the call pipeline importing a feature.
    ("pbx_bridge/calls/store.py", "import pbx_bridge.clients.hook", "pbx_bridge's layers"),
    # A library importing the application.
    ("recordings/schema.py", "import pbx_bridge.config", "The libraries never import pbx_bridge"),
    # A feature reaching into another's module (tables included).
    ("pbx_bridge/reports/summary.py", "import pbx_bridge.web.schema",
     "Features do not import each other"),
    # A cycle inside one layer: the settings importing the database opening, which imports them.
    ("pbx_bridge/config.py", "import pbx_bridge.db.connect", "No import cycles"),
])
def test_a_violation_breaks_a_contract(tree_copy: Path, module: str, bad_import: str, contract: str) -> None:
    path = tree_copy / module
    original = path.read_text()
    try:
        path.write_text(original + f"\n{bad_import}  # added by the test\n")
        result = lint_imports(tree_copy)
    finally:
        path.write_text(original)
    assert result.returncode != 0, result.stdout
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, result.stdout
    assert Path(module).stem in broken, result.stdout
