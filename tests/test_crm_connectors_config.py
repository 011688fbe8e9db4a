"""[crm.bitrix24] and [crm.kommo]: validated up front, one line naming the key; set from the
environment like any key; their secrets never printed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pbx_bridge.config import ConfigError, effective_config, load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_one_external_crm_at_a_time(tmp_path: Path) -> None:
    path = write(tmp_path, '[crm]\nexternal_enabled = true\nexternal_call_url = "http://x/c"\n'
                           '[crm.kommo]\nenabled = true\nbase_url = "https://a.kommo.com"\n'
                           'long_lived_token = "t"\n')
    expected = "only one external CRM may be active, got crm.external_enabled and crm.kommo.enabled"
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_settings(path, {})


@pytest.mark.parametrize(("text", "message"), [
    ('[crm.bitrix24]\nenabled = true\n', "'crm.bitrix24' needs webhook_url, or portal_url with client_id"),
    ('[crm.bitrix24]\nenabled = true\nwebhook_url = "ftp://x"\n', "'crm.bitrix24.webhook_url' must be"),
    ('[crm.bitrix24]\nenabled = true\nportal_url = "https://p"\nclient_id = "a"\nclient_secret = "b"\n'
     'burst = 0\n', "'crm.bitrix24.requests_per_second', 'burst' and 'timeout' must be positive"),
    ('[crm.bitrix24]\nshow_card = "yes"\n', "'crm.bitrix24.show_card' must be true or false"),
    ('[crm.bitrix24]\nportal = "https://p"\n', "unknown key 'crm.bitrix24.portal'"),
    ('[crm.kommo]\nenabled = true\n', "'crm.kommo.base_url' is required"),
    ('[crm.kommo]\nenabled = true\nbase_url = "https://a.kommo.com"\n', "'crm.kommo' needs long_lived_token"),
    ('[crm.kommo]\nenabled = true\nbase_url = "https://a.kommo.com"\nlong_lived_token = "t"\n'
     'requests_per_second = 10\n', "must be 1-7 (Kommo's limit)"),
    ('[crm.kommo.users]\n"101" = "anna"\n', "'crm.kommo.users.101' must be an integer"),
])
def test_bad_values_are_one_clear_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(write(tmp_path, text), {})
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_subsection_keys_from_the_environment_and_secrets_masked(tmp_path: Path) -> None:
    settings = load_settings(None, {
        "PBX_BRIDGE_CRM__BITRIX24__ENABLED": "true",
        "PBX_BRIDGE_CRM__BITRIX24__PORTAL_URL": "https://example.bitrix24.ru",
        "PBX_BRIDGE_CRM__BITRIX24__CLIENT_ID": "local.1",
        "PBX_BRIDGE_CRM__BITRIX24__CLIENT_SECRET": "very-secret",
        "PBX_BRIDGE_CRM__BITRIX24__REFRESH_TOKEN": "refresh-me",
        "PBX_BRIDGE_CRM__KOMMO__USERS": '{ "101" = 5001 }',
    })
    b24 = settings.crm.bitrix24
    assert (b24.enabled, b24.client_secret, b24.refresh_token) == (True, "very-secret", "refresh-me")
    assert settings.crm.kommo.users == {"101": 5001}
    shown = effective_config(settings)["crm"]["bitrix24"]
    assert shown["client_secret"] == shown["refresh_token"] == "***"
    assert shown["client_id"] == "local.1"
    hook = load_settings(None, {"PBX_BRIDGE_CRM__BITRIX24__WEBHOOK_URL": "https://p/rest/1/code/"})
    assert effective_config(hook)["crm"]["bitrix24"]["webhook_url"] == "***"


def test_the_shipped_configuration_documents_every_key() -> None:
    text = (Path(__file__).resolve().parent.parent / "config" / "pbx-bridge.toml").read_text()
    from dataclasses import fields

    from pbx_bridge.config import Bitrix24Config, KommoConfig
    for section, cls in (("[crm.bitrix24]", Bitrix24Config), ("[crm.kommo]", KommoConfig)):
        assert section in text
        part = text.split(section, 1)[1]
        for f in fields(cls):
            if f.name == "users":
                assert "[crm.kommo.users]" in text
                continue
            assert f"\n{f.name} = " in part or f"\n# {f.name} = " in part, (section, f.name)
