"""Signed, expiring links to a call's recording, for CRMs that cannot send an Authorization header.

Token: ``<call id>.<expiry epoch seconds>.<signature>``, the signature being HMAC-SHA256 over a
purpose tag, the call id and the expiry (base64url, no padding). Nothing else is trusted: the
call id in the token is an integer that the handler looks up like any other.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass

_PURPOSE = b"pbx-bridge recording v1"
# Numbers exactly as sign() writes them: no leading zeros (else one link has many spellings).
_TOKEN = re.compile(r"^([1-9][0-9]{0,18})\.([1-9][0-9]{0,11})\.([A-Za-z0-9_-]{43})$")
MIN_KEY_BYTES = 16


class TokenError(Exception):
    """Why a token is refused: malformed, bad signature, or expired."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class SignedLink:
    call_id: int
    expires_at: int  # epoch seconds
    token: str


def _signature(key: bytes, call_id: int, expires_at: int) -> str:
    mac = hmac.new(key, _PURPOSE + b"\0" + f"{call_id}.{expires_at}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()


def _check_key(key: bytes) -> None:
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"signing key must be at least {MIN_KEY_BYTES} bytes")


def sign(key: bytes, call_id: int, *, now: float, ttl_seconds: int) -> SignedLink:
    _check_key(key)
    if call_id <= 0 or ttl_seconds <= 0:
        raise ValueError("call id and ttl must be positive")
    expires_at = int(now) + ttl_seconds
    return SignedLink(call_id, expires_at, f"{call_id}.{expires_at}.{_signature(key, call_id, expires_at)}")


def verify(key: bytes, token: str, *, now: float) -> int:
    """The call id the token grants, or TokenError."""
    _check_key(key)
    match = _TOKEN.match(token)
    if not match:
        raise TokenError("malformed", "not a recording link token")
    call_id, expires_at, given = int(match.group(1)), int(match.group(2)), match.group(3)
    if not hmac.compare_digest(given, _signature(key, call_id, expires_at)):
        raise TokenError("bad_signature", "the link's signature does not match")
    if now >= expires_at:
        raise TokenError("expired", "the link has expired")
    return call_id
