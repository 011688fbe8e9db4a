"""Issue 18 point 8: what the bridge shows and writes does not give secrets away.

`config check` (the real command, as a subprocess) hides credentials inside URLs; the one masking
function behind it; the files the bridge creates (the SQLite database, through the real `db
upgrade` under the common umask 022) are for its user and group only."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pbx_bridge.cli import PRIVATE_UMASK, narrow_umask
from pbx_bridge.masking import mask_url, mask_value
from tests.e2e_support import ROOT, cli_env

SECRETS = ("db-pass-1", "crm-pass-2", "key-3", "tok-4", "tok-5", "b24-secret-6", "kommo-tok-7",
           "portal-pass-8", "sign-key-9-long-enough")


def test_config_check_masks_credentials_in_urls(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f'''
[server]
data_dir = "{tmp_path / 'data'}"
[database]
url = "postgresql+asyncpg://bridge:db-pass-1@db.example/pbx"
[recordings]
signing_key = "sign-key-9-long-enough"
[crm]
external_enabled = true
external_lookup_url = "https://crmuser:crm-pass-2@crm.example/lookup?phone={{phone}}&api_key=key-3"
external_contact_url = "https://crm.example/contact?token=tok-4&x=1"
external_call_url = "https://crm.example/call?access_token=tok-5"
[crm.bitrix24]
portal_url = "https://admin:portal-pass-8@portal.example"
client_secret = "b24-secret-6"
[crm.kommo]
long_lived_token = "kommo-tok-7"
''')
    result = subprocess.run([sys.executable, "-m", "pbx_bridge", "--config", str(config), "config",
                             "check"], cwd=ROOT, env=cli_env(), capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    shown = result.stdout
    for secret in SECRETS:
        assert secret not in shown, secret
    # What a reader needs to check stays visible.
    assert 'url = "postgresql+asyncpg://bridge:***@db.example/pbx"' in shown
    assert "https://crmuser:***@crm.example/lookup?phone={phone}&api_key=***" in shown
    assert "https://crm.example/contact?token=***&x=1" in shown
    assert "https://crm.example/call?access_token=***" in shown
    assert "https://admin:***@portal.example" in shown


@pytest.mark.parametrize(("text", "expected"), [
    ("https://u:p@h/x", "https://u:***@h/x"),
    ("https://tokenonly@h/x", "https://***@h/x"),
    ("https://h/x?a=1&API_KEY=s&Sig=q;b=2", "https://h/x?a=1&API_KEY=***&Sig=***;b=2"),
    ("https://h/x?client-secret=s&code=c&keep=1", "https://h/x?client-secret=***&code=***&keep=1"),
    ("GET /api/v1/recordings/signed/12.1796000000.abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG",
     "GET /api/v1/recordings/signed/12.1796000000.abcd***"),
    ("no url here, key=value", "no url here, key=value"),
])
def test_mask_url(text: str, expected: str) -> None:
    assert mask_url(text) == expected


def test_mask_value_by_key() -> None:
    assert mask_value("signing_key", "k") == "***"
    assert mask_value("client_secret", "s") == "***"
    assert mask_value("webhook_url", "https://p/rest/1/code/") == "***"
    assert mask_value("public_url", "https://bridge.example") == "https://bridge.example"
    assert mask_value("base_url", "https://a:b@kommo.example") == "https://a:***@kommo.example"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_sqlite_database_is_private_under_a_loose_umask(tmp_path: Path) -> None:
    data = tmp_path / "fresh" / "db"
    url = f"sqlite+aiosqlite:///{data / 'bridge.sqlite3'}"
    result = subprocess.run(
        [sys.executable, "-m", "pbx_bridge", "db", "upgrade"], cwd=ROOT,
        env=cli_env(PBX_BRIDGE_DATABASE__URL=url, PBX_BRIDGE_SERVER__DATA_DIR=str(tmp_path / "var")),
        capture_output=True, text=True, timeout=120, check=False,
        preexec_fn=lambda: os.umask(0o022))
    assert result.returncode == 0, result.stderr
    files = [p for p in data.iterdir() if p.name.startswith("bridge.sqlite3")]
    assert files
    for path in files:  # the database and any -wal / -shm SQLite left
        assert _mode(path) & 0o037 == 0, (path.name, oct(_mode(path)))
    assert _mode(data) & 0o027 == 0, oct(_mode(data))


def test_sqlite_database_file_mode_in_process(tmp_path: Path) -> None:
    from pbx_bridge.db.engine import SQLITE_FILE_MODE, make_engine

    old = os.umask(0o022)
    try:
        make_engine(f"sqlite+aiosqlite:///{tmp_path / 'x' / 'db.sqlite3'}")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "x" / "db.sqlite3") == SQLITE_FILE_MODE == 0o640
    assert _mode(tmp_path / "x") == 0o750


def test_umask_is_only_narrowed() -> None:
    old = os.umask(0o022)
    try:
        assert narrow_umask() == 0o027 == PRIVATE_UMASK
        os.umask(0o077)
        assert narrow_umask() == 0o077  # a stricter umask from the caller is kept
    finally:
        os.umask(old)
