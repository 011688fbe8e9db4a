"""What the running server's parts share, passed explicitly (no module-level state)."""

from __future__ import annotations

from collections.abc import Callable
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
    # Whether this process may act on the PBX (send MixMonitor, Originate) now: always, alone;
    # with standbys, only the active one (pbx_bridge.standby.leadership).
    acting: Callable[[], bool] = field(default=lambda: True)
