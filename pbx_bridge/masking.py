"""Hiding credentials wherever configuration or URLs are shown (`config check`, `crm check`, the
log): one function, so every place hides the same things the same way.

In a URL: the password of its userinfo (`https://user:***@host`), the values of query parameters
whose names say they carry a credential (`?api_key=***`, `?token=***`, `?sig=***`) and the
signature of a signed recording link (`/signed/12.1796000000.AbCd***`).
Scheme, host, path and the other parameters stay visible: that is what a reader needs to check.
"""

from __future__ import annotations

import re
from typing import Any

# Query parameter names whose values are credentials (compared lower-case; '-' counts as '_').
SECRET_PARAMS = frozenset({
    "access_token", "api_key", "apikey", "auth", "client_secret", "code", "key", "pass",
    "passwd", "password", "pwd", "refresh_token", "secret", "sig", "signature", "token",
})
# Configuration keys whose whole value is a credential.
SECRET_KEYS = frozenset({"secret", "password", "token", "hmac_secret", "signing_key",
                         "authorization_code", "api_key"})
MASK = "***"

_USERINFO = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^@/?#:\s]*)(?P<pw>:[^@/?#\s]*)?@")
# A signed recording link's path: /…/signed/<call id>.<expiry>.<signature>; the signature is the
# credential (replayable until expiry), so only its first characters are kept, to tell links apart.
_SIGNED_PATH = re.compile(r"(/signed/[0-9]+\.[0-9]+\.[A-Za-z0-9_-]{4})[A-Za-z0-9_-]+")
_PARAM = re.compile(r"(?P<lead>[?&;])(?P<name>[^=&#\s\"']+)=(?P<value>[^&#;\s\"']*)")


def _param(match: re.Match[str]) -> str:
    name = match.group("name")
    if name.lower().replace("-", "_") in SECRET_PARAMS and match.group("value"):
        return f"{match.group('lead')}{name}={MASK}"
    return match.group(0)


def _userinfo(match: re.Match[str]) -> str:
    # user:password keeps the user (who it is); a lone user part is often the token itself.
    if match.group("pw") is not None and match.group("user"):
        return f"{match.group('scheme')}{match.group('user')}:{MASK}@"
    return f"{match.group('scheme')}{MASK}@"


def mask_url(text: str) -> str:
    """`text` with every URL's userinfo password, credential query values and signed-link
    signature masked."""
    if "://" in text:
        text = _USERINFO.sub(_userinfo, text)
    if "=" in text:
        text = _PARAM.sub(_param, text)
    if "/signed/" in text:
        text = _SIGNED_PATH.sub(rf"\1{MASK}", text)
    return text


def is_secret_key(key: str) -> bool:
    key = key.lower()
    return (key in SECRET_KEYS or (key.endswith(("secret", "password", "_token", "_key"))
            and not key.endswith(("_url", "public_key"))))


def mask_value(key: str, value: Any) -> Any:
    """A configuration value as it may be shown: the whole of it hidden for a secret key (and
    for a Bitrix24 webhook, whose path is its password), credentials inside URLs hidden for the
    rest."""
    if not isinstance(value, str) or not value:
        return value
    if key == "webhook_url" or is_secret_key(key):
        return MASK
    return mask_url(value)
