"""One HTTP request to a native connector's CRM: the answer's status and text, or the reason it
did not arrive as a DeliveryError (`unreachable` when no connection was made: such tries never
make an item dead), the connector marked down."""

from __future__ import annotations

from typing import Any

import aiohttp

from crm_sync.connector_state import ConnectorState
from crm_sync.outbox import DeliveryError


async def send(session: aiohttp.ClientSession, method: str, url: str, *, state: ConnectorState, crm: str,
               limits: aiohttp.ClientTimeout, **options: Any) -> tuple[int, str]:
    state.requests += 1
    try:
        async with session.request(method, url, timeout=limits, **options) as resp:
            return resp.status, await resp.text()
    except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
        state.down(f"unreachable: {type(exc).__name__}")
        raise DeliveryError(f"{crm} unreachable: {type(exc).__name__}: {exc}", unreachable=True) from None
    except TimeoutError:
        state.down("no answer in time")
        raise DeliveryError(f"{crm} did not answer within {limits.total:g} s") from None
    except aiohttp.ClientError as exc:
        state.down(f"connection failed: {type(exc).__name__}")
        raise DeliveryError(f"{crm} connection failed: {type(exc).__name__}: {exc}") from None
