"""The [crm] configuration section: documented defaults load, bad values are one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from pbx_bridge.config import ConfigError, effective_config, load_settings
from pbx_bridge.crm_connectors.options import connector_settings, contact_policy, match_settings, retry_policy

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_file_documents_crm_defaults() -> None:
    settings = load_settings(ROOT / "config" / "pbx-bridge.toml", environ={})
    assert settings.crm.inbound_policy == "every" and settings.crm.match_digits == 10
    assert settings.crm.external_enabled is False


def test_crm_section_loads_and_maps_to_library_options(tmp_path: Path) -> None:
    path = write(tmp_path, """
[crm]
inbound_policy = "min_talk"
outbound_policy = "never"
min_talk_seconds = 15
match_digits = 9
callback_group = "sales"
external_enabled = true
external_call_url = "https://crm.example/api/calls"
outbox_max_attempts = 3

[crm.did_sources]
"+74951110000" = "Yandex Direct"
74951112222 = "website"

[crm.external_fields]
name = "TITLE"
""")
    settings = load_settings(path, environ={"PBX_BRIDGE_CRM__EXTERNAL_HMAC_SECRET": "from-env"})
    policy = contact_policy(settings)
    assert (policy.inbound, policy.outbound, policy.min_talk_seconds) == ("min_talk", "never", 15.0)
    assert dict(policy.did_sources) == {"+74951110000": "Yandex Direct", "74951112222": "website"}
    assert match_settings(settings).match_digits == 9
    conn = connector_settings(settings)
    assert conn.hmac_secret == "from-env" and conn.field_map == {"name": "TITLE"}
    assert retry_policy(settings).max_attempts == 3
    assert effective_config(settings)["crm"]["external_hmac_secret"] == "***"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('inbound_policy = "sometimes"', "'crm.inbound_policy' must be one of"),
        ("match_digits = 3", "'crm.match_digits' must be 7-15"),
        ("min_talk_seconds = -1", "must not be negative"),
        ("external_enabled = true", "no crm.external_\\*_url is set"),
        ('external_call_url = "ftp://x"', "must be an http:// or https:// URL"),
        ("outbox_max_attempts = 0", "at least 1"),
        ("external_timeout = 0", "'crm.external_timeout' must be positive"),
        ('did_sources = "x"', "'crm.did_sources' must be a table"),
        ("colour = 1", "unknown key 'crm.colour'"),
    ],
)
def test_bad_crm_values(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(write(tmp_path, f"[crm]\n{text}\n"), environ={})
