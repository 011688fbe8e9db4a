"""A native connector's state, as /readyz, /metrics and `crm check` show it.

- starting: nothing sent yet
- ok: the last request got through
- down: the CRM cannot be reached or answers 5xx; deliveries are retried (nothing is lost)
- stopped: the CRM refused our credentials in a way retrying cannot fix (a refresh token that is
  gone, a webhook without the rights, an application not installed). Nothing more is sent, and
  nothing is lost: items wait until the credentials are fixed (new tokens from the CRM, or a
  restart with a new configuration).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from crm_sync.outbox import DeliveryError

StateName = Literal["starting", "ok", "down", "stopped"]
STATES: tuple[StateName, ...] = ("starting", "ok", "down", "stopped")


class ConnectorStopped(DeliveryError):
    """Raised instead of sending while the connector is stopped: never makes an item dead."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True, unreachable=True)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class ConnectorState:
    name: str
    state: StateName = "starting"
    detail: str = ""
    since: datetime = field(default_factory=_now)
    requests: int = 0
    limit_errors: int = 0
    token_refreshes: int = 0

    def _set(self, state: StateName, detail: str) -> None:
        if state != self.state:
            self.since = _now()
        self.state, self.detail = state, detail

    def ok(self) -> None:
        self._set("ok", "")

    def down(self, detail: str) -> None:
        if self.state != "stopped":
            self._set("down", detail)

    def stop(self, detail: str) -> None:
        self._set("stopped", detail)

    def resume(self) -> None:
        """New credentials arrived: try again."""
        self._set("starting", "")

    @property
    def stopped(self) -> bool:
        return self.state == "stopped"

    def check(self) -> None:
        if self.stopped:
            raise ConnectorStopped(f"{self.name} connector stopped: {self.detail}")

    def to_dict(self) -> dict[str, Any]:
        return {"connector": self.name, "state": self.state, "detail": self.detail,
                "since": self.since.isoformat(), "requests": self.requests,
                "limit_errors": self.limit_errors, "token_refreshes": self.token_refreshes}
