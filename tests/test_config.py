"""Configuration: defaults, environment overrides, and one clear line + exit 2 for each mistake."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pbx_bridge.config import ConfigError, effective_config, load_settings

ROOT = Path(__file__).resolve().parent.parent


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PBX_BRIDGE_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "pbx_bridge", *args],
        capture_output=True, text=True, env=full_env, cwd=cwd, timeout=60,
    )


def test_default_file_is_valid() -> None:
    settings = load_settings(ROOT / "config" / "pbx-bridge.toml", environ={})
    assert settings.phone.default_region == "RU"
    assert settings.database_url.startswith("sqlite+aiosqlite:///")
    assert settings.pbx == []


def test_environment_overrides_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[[pbx]]\nname = "main"\nsecret = "from-file"\n[server]\nport = 8000\n')
    settings = load_settings(path, environ={
        "PBX_BRIDGE_PBX__MAIN__SECRET": "from-env",
        "PBX_BRIDGE_SERVER__PORT": "9000",
        "PBX_BRIDGE_PBX__0__INBOUND_CONTEXTS": '["a", "b"]',
    })
    assert settings.pbx[0].secret == "from-env"
    assert settings.server.port == 9000
    assert settings.pbx[0].inbound_contexts == ["a", "b"]


def test_secrets_masked_in_effective_config(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[[pbx]]\nname = "main"\nsecret = "hunter2"\n'
                    '[database]\nurl = "postgresql+asyncpg://u:pw@db/x"\n')
    shown = effective_config(load_settings(path, environ={}))
    assert shown["pbx"][0]["secret"] == "***"
    assert "pw" not in shown["database"]["url"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("[server]\nprot = 1\n", "unknown key 'server.prot'"),
        ("[bogus]\nx = 1\n", "unknown key 'bogus'"),
        ('[server]\nport = "eighty"\n', "'server.port' must be an integer, got a string"),
        ("[database]\nauto_upgrade = 1\n", "'database.auto_upgrade' must be true or false"),
        ('[database]\nurl = "mysql://x/y"\n', "'database.url' must start with"),
        ('[[pbx]]\nname = "main"\n', "'pbx[0] (main).secret' is missing"),
        ('[logging]\nlevel = "LOUD"\n', "'logging.level' must be one of"),
        ("[server\nport = 1\n", "invalid TOML"),
        ('[phone]\ndefault_region = "XX"\n', "'phone.default_region'"),
        ('[[pbx]]\nsecret = "s"\noperator_channel = "^PJSIP/"\n', "needs a (?P<ext>...) group"),
        ("[api]\nexport_xlsx_writers = 0\n", "'api.export_xlsx_writers' must be at least 1"),
    ],
)
def test_broken_config_one_line_exit_2(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "broken.toml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=None) as info:
        load_settings(path, environ={})
    assert expected in str(info.value)
    result = run_cli("--config", str(path), "config", "check")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0] and str(path) in lines[0]
    assert "Traceback" not in result.stderr


def test_unreadable_and_missing_file(tmp_path: Path) -> None:
    missing = run_cli("--config", str(tmp_path / "nope.toml"), "config", "check")
    assert missing.returncode == 2
    assert "not found" in missing.stderr and len(missing.stderr.strip().splitlines()) == 1
    unreadable = tmp_path / "locked.toml"
    unreadable.write_text("")
    unreadable.chmod(0)
    if os.access(unreadable, os.R_OK):  # root reads anything: use a directory instead
        unreadable = tmp_path
    result = run_cli("--config", str(unreadable), "config", "check")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_environment_value_exit_2() -> None:
    result = run_cli("config", "check", env={"PBX_BRIDGE_SERVER__PORT": "abc"})
    assert result.returncode == 2
    assert "'server.port' must be an integer" in result.stderr


def test_missing_secret_from_environment_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[[pbx]]\nname = "main"\n')
    result = run_cli("--config", str(path), "config", "check")
    assert result.returncode == 2
    assert "PBX_BRIDGE_PBX__MAIN__SECRET" in result.stderr
    ok = run_cli("--config", str(path), "config", "check",
                 env={"PBX_BRIDGE_PBX__MAIN__SECRET": "s3cr3t-value"})
    assert ok.returncode == 0, ok.stderr
    assert "s3cr3t-value" not in ok.stdout + ok.stderr
    assert 'secret = "***"' in ok.stdout


def test_bad_database_url_exit_2(tmp_path: Path) -> None:
    result = run_cli("db", "upgrade", env={"PBX_BRIDGE_DATABASE__URL": "sqlite+aiosqlite://:::bad"})
    assert result.returncode == 2
    assert "'database.url' is not a valid URL" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    # A well-formed URL to a server that does not answer: one line, exit 1 (not a config error).
    result = run_cli("db", "upgrade", env={
        "PBX_BRIDGE_DATABASE__URL": "postgresql+asyncpg://nobody@127.0.0.1:1/none"})
    assert result.returncode == 1
    assert "database unavailable" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    result = run_cli("db", "upgrade", env={"PBX_BRIDGE_DATABASE__URL": "oracle://x"})
    assert result.returncode == 2
    assert "'database.url' must start with" in result.stderr


def test_help_lists_commands() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("serve", "db", "config"):
        assert command in result.stdout
