"""Who the bridge knows, put together from the two features that keep people and tokens (web
users and sessions in pbx_bridge.web, API tokens in pbx_bridge.auth), for the features that ask
without knowing either: click-to-call (is this extension someone's?) and the live streams (does
this credential still hold?)."""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncEngine

from pbx_bridge.auth.tokens import extension_has_token, valid_token_credentials
from pbx_bridge.click_to_call.service import KnownExtension
from pbx_bridge.http.auth import CredentialCheck, CredentialKind
from pbx_bridge.web.users import extension_has_user, valid_session_credentials

CREDENTIAL_CHECKS: Mapping[CredentialKind, CredentialCheck] = {
    "token": valid_token_credentials,
    "session": valid_session_credentials,
}


def known_extension(engine: AsyncEngine) -> KnownExtension:
    """Whether a web user who is not disabled, or an unrevoked API token, has the extension."""

    async def known(extension: str) -> bool:
        async with engine.connect() as conn:
            return await extension_has_user(conn, extension) or await extension_has_token(
                conn, extension)

    return known
