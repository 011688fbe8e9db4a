"""Keys on the aiohttp application shared by every feature (below the features: no imports up)."""

from __future__ import annotations

from aiohttp import web

from pbx_bridge.runtime import Runtime

RUNTIME: web.AppKey[Runtime] = web.AppKey("runtime", Runtime)
