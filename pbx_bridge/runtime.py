"""What the running server's parts share, passed explicitly (no module-level state)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from pbx_bridge.bus import EventBus
from pbx_bridge.config import Settings


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[Any]
    bus: EventBus = field(default_factory=EventBus)
    # PBX name -> its connection (pbx_bridge.ami.connection.PbxConnection).
    pbx: dict[str, Any] = field(default_factory=dict)
    # Feature services by name, set up by pbx_bridge.app.
    services: dict[str, Any] = field(default_factory=dict)
