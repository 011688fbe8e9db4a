"""A generic HTTP connector for an external CRM: look a contact up by phone, create a contact,
post a call activity. JSON bodies, field names mapped by configuration, HMAC-SHA256 signed.

Signature: header `<signature_header>: sha256=<hex>` = HMAC-SHA256(secret, body bytes); for the
GET lookup, the signed bytes are the request's path and query ("/contacts?phone=%2B7...").
Every POST also carries `Idempotency-Key: pbx-bridge-outbox-<id>` because delivery is at least
once, and `X-Pbx-Bridge-Event: contact|call`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

from crm_sync.outbox import DeliveryError, OutboxItem

KIND_CONTACT = "contact"
KIND_CALL = "call"


@dataclass(frozen=True)
class ConnectorSettings:
    lookup_url: str = ""  # "{phone}" is replaced by the URL-quoted E.164 number
    create_contact_url: str = ""
    call_activity_url: str = ""
    # Our field name -> the CRM's ("phone" -> "PHONE", or "contact.phone" for a nested object).
    field_map: Mapping[str, str] = field(default_factory=dict)
    hmac_secret: str = ""
    signature_header: str = "X-Signature"
    connect_timeout: float = 2.0
    timeout: float = 5.0

    def url_for(self, kind: str) -> str:
        return {KIND_CONTACT: self.create_contact_url, KIND_CALL: self.call_activity_url}.get(kind, "")


def sign(data: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()


def verify(data: bytes, secret: str, signature: str) -> bool:
    return hmac.compare_digest(sign(data, secret), signature or "")


def map_fields(payload: Mapping[str, Any], field_map: Mapping[str, str]) -> dict[str, Any]:
    """Rename our fields to the CRM's; dotted targets build nested objects; unmapped keep their name."""
    out: dict[str, Any] = {}
    for key, value in payload.items():
        target = field_map.get(key, key)
        node = out
        *parents, leaf = target.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def unmap_fields(data: Mapping[str, Any], field_map: Mapping[str, str]) -> dict[str, Any]:
    """The CRM's answer back in our field names (the reverse of map_fields, nested paths too)."""
    out: dict[str, Any] = {}
    mapped_roots: set[str] = set()
    for ours, theirs in field_map.items():
        node: Any = data
        for part in theirs.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        if node is not None:
            out[ours] = node
        mapped_roots.add(theirs.split(".")[0])
    for key, value in data.items():
        if key not in mapped_roots and key not in out:
            out[key] = value
    return out


def encode(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()


class HttpConnector:
    """Talks to the external CRM; the aiohttp session is the caller's (one per process)."""

    def __init__(self, settings: ConnectorSettings, session: aiohttp.ClientSession) -> None:
        self.settings = settings
        self.session = session
        self._timeout = aiohttp.ClientTimeout(
            total=settings.timeout, connect=settings.connect_timeout, sock_read=settings.timeout
        )

    def _headers(self, signed: bytes) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.settings.hmac_secret:
            headers[self.settings.signature_header] = sign(signed, self.settings.hmac_secret)
        return headers

    async def send(self, item: OutboxItem) -> None:
        """Deliver one outbox item; raises DeliveryError (retryable or not) when it did not land."""
        url = self.settings.url_for(item.kind)
        if not url:
            return  # nothing configured for this kind: delivered as a no-op
        body = encode(map_fields(item.payload, self.settings.field_map))
        headers = self._headers(body)
        headers["Idempotency-Key"] = f"pbx-bridge-outbox-{item.id}"
        headers["X-Pbx-Bridge-Event"] = item.kind
        status, text = await self._request("POST", url, body, headers)
        _check_status(status, text)
        if text.strip():
            try:
                json.loads(text)
            except ValueError:
                raise DeliveryError(
                    f"CRM answered {status} with a body that is not JSON: {text[:80]!r}"
                ) from None

    async def lookup(self, e164: str) -> dict[str, Any] | None:
        """The CRM's contact for a number in our field names, or None when it has none."""
        if not self.settings.lookup_url:
            return None
        url = self.settings.lookup_url.replace("{phone}", quote(e164, safe=""))
        parts = urlsplit(url)
        signed = (parts.path + ("?" + parts.query if parts.query else "")).encode()
        status, text = await self._request("GET", url, None, self._headers(signed))
        if status == 404:
            return None
        _check_status(status, text)
        try:
            data = json.loads(text) if text.strip() else None
        except ValueError:
            raise DeliveryError(f"CRM lookup answered a body that is not JSON: {text[:80]!r}") from None
        if isinstance(data, list):
            data = data[0] if data else None
        if data is None:
            return None
        if not isinstance(data, dict):
            raise DeliveryError(f"CRM lookup answered {type(data).__name__}, not an object")
        return unmap_fields(data, self.settings.field_map)

    async def _request(
        self, method: str, url: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, str]:
        try:
            async with self.session.request(
                method, url, data=body, headers=headers, timeout=self._timeout
            ) as resp:
                raw = await resp.read()
                return resp.status, raw.decode("utf-8", errors="replace")
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            # No connection at all: the request never reached the CRM.
            raise DeliveryError(f"CRM unreachable: {type(exc).__name__}: {exc}",
                                unreachable=True) from None
        except TimeoutError:
            raise DeliveryError(f"CRM did not answer within {self.settings.timeout:g} s") from None
        except aiohttp.ClientError as exc:
            raise DeliveryError(f"CRM connection failed: {type(exc).__name__}: {exc}") from None


def _check_status(status: int, text: str) -> None:
    if 200 <= status < 300:
        return
    snippet = " ".join(text.split())[:120]
    # Rate limits and timeouts pass; other client errors are the request's fault: retrying
    # the same body cannot succeed, so the item goes to the dead letters at once.
    retryable = status >= 500 or status in (408, 425, 429)
    raise DeliveryError(f"CRM answered HTTP {status}: {snippet}", retryable=retryable)
