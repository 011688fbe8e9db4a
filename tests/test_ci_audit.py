"""`.ci/audit`'s decision on pip-audit's JSON report: fail on a known vulnerability with a fixed
version, report (not fail) those without one, pass quietly when there are none, and say plainly and
pass when the vulnerability service cannot be reached. The reports below have pip-audit 2.x's shape
(`pip-audit --format json`); the script itself runs as a subprocess on them, as CI runs it."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / ".ci" / "audit"


def _module() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("ci_audit", str(SCRIPT))
    spec = importlib.util.spec_from_loader("ci_audit", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["ci_audit"] = module  # dataclasses look their module up
    loader.exec_module(module)
    return module


audit = _module()

CLEAN = {"dependencies": [{"name": "aiohttp", "version": "3.13.2", "vulns": []},
                          {"name": "jinja2", "version": "3.1.6", "vulns": []}], "fixes": []}
FIXABLE = {"dependencies": [
    {"name": "jinja2", "version": "3.1.2", "vulns": [
        {"id": "GHSA-h75v-3vvj-5mfj", "fix_versions": ["3.1.4"], "aliases": ["CVE-2024-34064"],
         "description": "..."}]},
    {"name": "aiohttp", "version": "3.13.2", "vulns": []}], "fixes": []}
UNFIXABLE = {"dependencies": [
    {"name": "ecdsa", "version": "0.19.1", "vulns": [
        {"id": "GHSA-wj6h-64fc-37mp", "fix_versions": [], "aliases": ["CVE-2024-23342"],
         "description": "..."}]},
    {"name": "aiohttp", "version": "3.13.2", "vulns": []}], "fixes": []}
# What pip-audit printed here: PyPI's per-release JSON API answered 404 for every package.
SKIPPED = "Dependency not found on PyPI and could not be audited: {} ({})"
NOTHING_FOUND = {"dependencies": [
    {"name": "aiohttp", "skip_reason": SKIPPED.format("aiohttp", "3.13.2")},
    {"name": "jinja2", "skip_reason": SKIPPED.format("jinja2", "3.1.6")},
], "fixes": []}
OFFLINE_STDERR = ("ERROR:pip_audit._cli:requests.exceptions.ConnectionError: HTTPSConnectionPool("
                  "host='pypi.org', port=443): Max retries exceeded with url: /pypi/aiohttp/3.13.2/json")


def _run(tmp_path: Path, report: dict[str, Any] | str, stderr: str = "") -> tuple[int, str]:
    report_file = tmp_path / "report.json"
    report_file.write_text(report if isinstance(report, str) else json.dumps(report))
    err_file = tmp_path / "stderr.txt"
    err_file.write_text(stderr)
    done = subprocess.run([sys.executable, str(SCRIPT), "--from-json", str(report_file), "--stderr",
                           str(err_file)], capture_output=True, text=True, timeout=60, check=False)
    return done.returncode, done.stdout


def test_a_vulnerability_with_a_fix_fails(tmp_path: Path) -> None:
    code, out = _run(tmp_path, FIXABLE)
    assert code == 1
    assert "FAILED" in out and "jinja2 3.1.2: GHSA-h75v-3vvj-5mfj, CVE-2024-34064 (fixed in 3.1.4)" in out


def test_a_vulnerability_without_a_fix_is_reported_not_failed(tmp_path: Path) -> None:
    code, out = _run(tmp_path, UNFIXABLE)
    assert code == 0
    assert "without a fix" in out and "ecdsa 0.19.1: GHSA-wj6h-64fc-37mp" in out
    # Both kinds at once: the fixable one decides.
    both = {"dependencies": FIXABLE["dependencies"] + UNFIXABLE["dependencies"][:1], "fixes": []}
    code, out = _run(tmp_path, both)
    assert code == 1 and "ecdsa" in out and "jinja2" in out


def test_no_known_vulnerability_passes(tmp_path: Path) -> None:
    code, out = _run(tmp_path, CLEAN)
    assert code == 0
    assert out.strip() == "audit: no known vulnerabilities in 2 of 2 packages"


@pytest.mark.parametrize(("report", "stderr"), [
    ("", OFFLINE_STDERR),  # no network: pip-audit printed no report
    (NOTHING_FOUND, ""),  # reachable, but the service answered for no package
])
def test_an_unreachable_service_is_said_plainly_and_passes(tmp_path: Path, report: Any, stderr: str) -> None:
    code, out = _run(tmp_path, report, stderr)
    assert code == 0
    assert out.startswith("audit: NOT DONE: the vulnerability service (PyPI)")
    assert "no known vulnerabilities" not in out  # never passed off as a clean audit


def test_a_broken_pip_audit_fails(tmp_path: Path) -> None:
    code, out = _run(tmp_path, "Traceback (most recent call last):", "ImportError: no module named x")
    assert code == 2 and "pip-audit failed" in out


def test_what_is_audited_is_the_bridge_and_not_the_auditor() -> None:
    pins = audit.closure()
    for needed in ("aiohttp", "sqlalchemy", "alembic", "panoramisk", "asyncpg", "pytest"):
        assert needed in pins, needed
    # pip-audit and what only it needs are not the bridge's dependencies.
    for tooling in ("pip-audit", "cyclonedx-python-lib", "pip-api", "pip-requirements-parser"):
        assert tooling not in pins, tooling
    assert "pbx-bridge" not in pins
