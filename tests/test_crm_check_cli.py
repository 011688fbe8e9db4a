"""`pbx-bridge crm check` as an administrator runs it: the CLI as a subprocess, the connector
configured from the environment ([crm.bitrix24] / [crm.kommo] keys), a contract server as the CRM."""

from __future__ import annotations

from pathlib import Path

from tests.contract_bitrix24 import Bitrix24Contract
from tests.contract_kommo import KommoContract
from tests.e2e_support import cli_env, run_cli


async def _env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    env = cli_env(PBX_BRIDGE_SERVER__DATA_DIR=str(tmp_path / "var"), **overrides)
    code, _out, err = await run_cli("db", "upgrade", env=env)
    assert code == 0, err
    return env


async def test_bitrix24_check_names_extensions_without_a_user(tmp_path: Path) -> None:
    portal = Bitrix24Contract()
    await portal.start()
    try:
        seed = portal.issue_tokens()
        env = await _env(
            tmp_path,
            PBX_BRIDGE_CRM__BITRIX24__ENABLED="true", PBX_BRIDGE_CRM__BITRIX24__PORTAL_URL=portal.url,
            PBX_BRIDGE_CRM__BITRIX24__CLIENT_ID=portal.client_id,
            PBX_BRIDGE_CRM__BITRIX24__CLIENT_SECRET=portal.client_secret,
            PBX_BRIDGE_CRM__BITRIX24__REFRESH_TOKEN=seed["refresh_token"],
            PBX_BRIDGE_CRM__BITRIX24__APPLICATION_TOKEN=portal.application_token,
            PBX_BRIDGE_CRM__BITRIX24__OAUTH_URL=portal.oauth_url,
            PBX_BRIDGE_SERVER__PUBLIC_URL="https://bridge.example",
            PBX_BRIDGE_CLICK_TO_CALL__EXTENSIONS='["101", "104"]',
            PBX_BRIDGE_CRM__DID_SOURCES='{ "+74951110000" = "Yandex Direct" }')
        code, out, err = await run_cli("crm", "check", env=env)
        assert code == 1, out + err
        lines = out.splitlines()
        assert "ok       credentials work: user.get listed 4 active users" in lines
        assert "ok       extension 101 -> Bitrix24 user 11 Anna Smirnova" in lines
        assert any(line.startswith("missing  extension 104 has no Bitrix24 user") for line in lines), out
        assert "ok       telephony scope: telephony.externalLine.get answered" in lines
        assert "note     line 74951110000 (Yandex Direct) will be added when serve starts" in lines
        bound = ("ok       OnExternalCallStart is bound to https://bridge.example/hooks/bitrix24 "
                 "when serve starts")
        assert bound in lines
        assert lines[-1] == "something is missing (see above)"
        # The refresh it made is kept: the seed is void, the new pair is in the database.
        assert seed["refresh_token"] not in portal.refresh and len(portal.refresh) == 1
        code, out, _err = await run_cli("crm", "check", env=env)
        assert [e.kind for e in portal.log].count("oauth") == 1, "the saved token was used again"
    finally:
        await portal.stop()


async def test_bitrix24_webhook_and_wrong_credentials_say_what_to_do(tmp_path: Path) -> None:
    portal = Bitrix24Contract()
    await portal.start()
    try:
        env = await _env(tmp_path, PBX_BRIDGE_CRM__BITRIX24__ENABLED="true",
                         PBX_BRIDGE_CRM__BITRIX24__WEBHOOK_URL=portal.webhook_url)
        code, out, err = await run_cli("crm", "check", env=env)
        assert code == 1, err
        assert "ok       credentials work: user.get listed 4 active users" in out
        assert "work only for an application (WRONG_AUTH_TYPE with a webhook)" in out
        wrong = portal.webhook_url.replace(portal.webhook_code, "wrong")
        env["PBX_BRIDGE_CRM__BITRIX24__WEBHOOK_URL"] = wrong
        code, out, err = await run_cli("crm", "check", env=env)
        assert code == 1 and "missing  credentials refused or portal unreachable" in out, out + err
        assert "INVALID_CREDENTIALS" in out
        assert "Traceback" not in err
    finally:
        await portal.stop()


async def test_kommo_check_finds_unknown_users(tmp_path: Path) -> None:
    account = KommoContract()
    await account.start()
    try:
        env = await _env(
            tmp_path,
            PBX_BRIDGE_CRM__KOMMO__ENABLED="true", PBX_BRIDGE_CRM__KOMMO__BASE_URL=account.url,
            PBX_BRIDGE_CRM__KOMMO__CLIENT_ID=account.client_id,
            PBX_BRIDGE_CRM__KOMMO__CLIENT_SECRET=account.client_secret,
            PBX_BRIDGE_CRM__KOMMO__REDIRECT_URI=account.redirect_uri,
            PBX_BRIDGE_CRM__KOMMO__AUTHORIZATION_CODE=account.authorization_code(),
            PBX_BRIDGE_CRM__KOMMO__USERS='{ "101" = 5001, "102" = 4242 }')
        code, out, err = await run_cli("crm", "check", env=env)
        assert code == 1, err
        assert "ok       credentials work: account Test" in out
        assert "ok       extension 101 -> Kommo user 5001 Anna" in out
        assert "missing  crm.kommo.users: 102 = 4242 is not a user of this account" in out
        assert "missing  extension 103 has no Kommo user: add it to [crm.kommo.users]" in out
        assert "server.public_url is empty" in out
    finally:
        await account.stop()


async def test_no_connector_enabled(tmp_path: Path) -> None:
    env = await _env(tmp_path)
    code, out, _err = await run_cli("crm", "check", env=env)
    assert code == 1 and "no external CRM is enabled" in out
    env["PBX_BRIDGE_CRM__BITRIX24__ENABLED"] = "true"
    env["PBX_BRIDGE_CRM__KOMMO__ENABLED"] = "true"
    code, _out, err = await run_cli("crm", "check", env=env)
    assert code == 2 and "only one external CRM may be active" in err
