""".ci/run fails when PostgreSQL cannot be started, instead of letting the PostgreSQL half of the
tests skip; when PostgreSQL answers, it runs `make test` with PostgreSQL required, then `make audit`
(the dependency audit, whose failure fails CI).

The script runs for real, with `pg_isready`, `pg_ctlcluster` and `make` replaced on PATH by
small stand-ins that record how they were called (the machine's PostgreSQL is never touched)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _tools(tmp: Path, *, ready: bool, start_ok: bool) -> Path:
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    calls = tmp / "calls"
    scripts = {
        "pg_isready": f"#!/bin/sh\necho pg_isready >> {calls}\nexit {0 if ready else 2}\n",
        "pg_ctlcluster": f"#!/bin/sh\necho \"pg_ctlcluster $*\" >> {calls}\nexit {0 if start_ok else 1}\n",
        "make": f"#!/bin/sh\necho \"make $* REQUIRE=$PBX_TEST_REQUIRE_POSTGRES\" >> {calls}\n",
    }
    for name, text in scripts.items():
        path = bin_dir / name
        path.write_text(text)
        path.chmod(0o755)
    return bin_dir


def _run(tmp: Path) -> tuple[int, list[str], str]:
    env = {**os.environ, "PATH": f"{tmp / 'bin'}:{os.environ['PATH']}"}
    result = subprocess.run([str(ROOT / ".ci" / "run")], env=env, capture_output=True, text=True,
                            timeout=120, check=False)
    calls = (tmp / "calls").read_text().splitlines() if (tmp / "calls").exists() else []
    return result.returncode, calls, result.stderr


def test_postgres_that_cannot_be_started_fails_ci(tmp_path: Path) -> None:
    _tools(tmp_path, ready=False, start_ok=False)
    code, calls, _err = _run(tmp_path)
    assert code != 0
    assert any(c.startswith("pg_ctlcluster") for c in calls)
    assert not any(c.startswith("make") for c in calls)  # the tests never ran with it missing


def test_postgres_up_runs_make_test_with_postgres_required(tmp_path: Path) -> None:
    _tools(tmp_path, ready=True, start_ok=True)
    code, calls, err = _run(tmp_path)
    assert code == 0, err
    assert "make test REQUIRE=1" in calls
    assert not any(c.startswith("pg_ctlcluster") for c in calls)
    # Then the dependency audit (.ci/audit), after the tests.
    assert [c.split(" REQUIRE")[0] for c in calls if c.startswith("make")] == ["make test", "make audit"]


def test_a_failing_audit_fails_ci(tmp_path: Path) -> None:
    _tools(tmp_path, ready=True, start_ok=True)
    make = tmp_path / "bin" / "make"
    calls = tmp_path / "calls"
    # The stand-in `make audit` exits 1, as .ci/audit does on a vulnerability with a fix.
    make.write_text(f'#!/bin/sh\necho "make $*" >> {calls}\n[ "$1" = audit ] && exit 1\nexit 0\n')
    code, recorded, _err = _run(tmp_path)
    assert code != 0
    assert [c for c in recorded if c.startswith("make")] == ["make test", "make audit"]
