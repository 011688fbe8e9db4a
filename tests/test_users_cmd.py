"""`pbx-bridge users ...` run as a real process against a migrated SQLite database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PBX_BRIDGE_")}
    env["PBX_BRIDGE_SERVER__DATA_DIR"] = str(tmp_path)
    up = subprocess.run([sys.executable, "-m", "pbx_bridge", "db", "upgrade"], capture_output=True,
                        text=True, env=env, cwd=ROOT, timeout=60)
    assert up.returncode == 0, up.stderr
    return env


def cli(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pbx_bridge", "users", *args], input=stdin,
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)


def test_users_create_list_disable(env: dict[str, str]) -> None:
    made = cli(env, "create", "--username", "anna", "--role", "manager", "--password-stdin",
               stdin="s3cret-pass\n")
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == "created user anna (manager)"
    made = cli(env, "create", "--username", "op1", "--role", "operator", "--extension", "101",
               "--language", "ru", "--password-stdin", stdin="another-pass\n")
    assert made.returncode == 0, made.stderr
    listed = cli(env, "list")
    assert listed.returncode == 0
    lines = listed.stdout.splitlines()
    assert lines[1].split()[:5] == ["anna", "manager", "-", "-", "active"]
    assert lines[2].split()[:5] == ["op1", "operator", "101", "ru", "active"]
    assert "s3cret" not in listed.stdout + listed.stderr + made.stdout + made.stderr
    off = cli(env, "disable", "op1")
    assert off.returncode == 0 and off.stdout.strip() == "user op1 disabled"
    assert cli(env, "list").stdout.splitlines()[2].split()[4] == "disabled"
    on = cli(env, "enable", "op1")
    assert on.returncode == 0 and cli(env, "list").stdout.splitlines()[2].split()[4] == "active"
    changed = cli(env, "password", "anna", "--password-stdin", stdin="brand-new-pass\n")
    assert changed.returncode == 0, changed.stderr


@pytest.mark.parametrize(("args", "stdin", "message"), [
    (("--username", "bot", "--role", "crm"), "s3cret-pass\n", "crm role is for API tokens"),
    (("--username", "op", "--role", "operator"), "s3cret-pass\n", "needs --extension"),
    (("--username", "x", "--role", "boss"), "s3cret-pass\n", "unknown role 'boss'"),
    (("--username", "bad name", "--role", "admin"), "s3cret-pass\n", "username must be"),
    (("--username", "weak", "--role", "admin"), "123\n", "at least 8 characters"),
    (("--username", "empty", "--role", "admin"), "", "no password on standard input"),
])
def test_users_create_refuses_bad_input(
    env: dict[str, str], args: tuple[str, ...], stdin: str, message: str
) -> None:
    result = cli(env, "create", *args, "--password-stdin", stdin=stdin)
    assert result.returncode == 1
    assert message in result.stderr and "Traceback" not in result.stderr
    assert cli(env, "list").stdout.count("\n") == 1  # nothing was created


def test_users_duplicates_unknowns_and_no_terminal(env: dict[str, str]) -> None:
    assert cli(env, "create", "--username", "anna", "--role", "admin", "--password-stdin",
               stdin="s3cret-pass\n").returncode == 0
    again = cli(env, "create", "--username", "Anna", "--role", "admin", "--password-stdin",
                stdin="s3cret-pass\n")
    assert again.returncode == 1 and "already exists" in again.stderr
    missing = cli(env, "disable", "ghost")
    assert missing.returncode == 1 and "no user named 'ghost'" in missing.stderr
    # Without --password-stdin the password is asked on a terminal; a pipe is refused clearly.
    piped = cli(env, "create", "--username", "bob", "--role", "admin", stdin="s3cret-pass\n")
    assert piped.returncode == 1 and "use --password-stdin" in piped.stderr


def test_users_on_an_unmigrated_database(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PBX_BRIDGE_")}
    env["PBX_BRIDGE_SERVER__DATA_DIR"] = str(tmp_path / "fresh")
    result = cli(env, "list")
    assert result.returncode == 1 and "schema is out of date" in result.stderr
