"""Which answered calls are recorded, and how long their recordings are kept.

Precedence: an operator's override beats a DID's override, which beats the general mode. Each
deciding rule has a name ("default", "did:<number>", "operator:<ext>") stored with the
recording, and the retention job asks the policy for that rule's current number of days.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Mode = Literal["all", "inbound", "outbound", "none"]
MODES: tuple[Mode, ...] = ("all", "inbound", "outbound", "none")
# A retention of 0 days keeps recordings forever.
KEEP_FOREVER = 0


@dataclass(frozen=True)
class Override:
    record: bool = True
    # None = the policy's default retention.
    retention_days: int | None = None


@dataclass(frozen=True)
class Policy:
    mode: Mode = "all"
    retention_days: int = 90
    # Keys: the DID as the call record holds it (E.164), and operators' extensions.
    did_overrides: Mapping[str, Override] = field(default_factory=dict)
    operator_overrides: Mapping[str, Override] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"recording mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        for days in [self.retention_days] + [
            o.retention_days for o in [*self.did_overrides.values(), *self.operator_overrides.values()]
            if o.retention_days is not None
        ]:
            if days < 0:
                raise ValueError(f"retention days must be 0 (forever) or more, got {days}")


@dataclass(frozen=True)
class Decision:
    record: bool
    rule: str  # which rule decided: default | did:<number> | operator:<ext>
    retention_days: int


def decide(
    policy: Policy, *, answered: bool, direction: str, did: str | None, operator: str | None
) -> Decision:
    """Whether to record this call. Only answered calls are ever recorded."""
    if not answered:
        return Decision(False, "default", policy.retention_days)
    if operator is not None and operator in policy.operator_overrides:
        return _from_override(policy, f"operator:{operator}", policy.operator_overrides[operator])
    if did is not None and did in policy.did_overrides:
        return _from_override(policy, f"did:{did}", policy.did_overrides[did])
    record = policy.mode == "all" or policy.mode == direction
    return Decision(record, "default", policy.retention_days)


def _from_override(policy: Policy, rule: str, override: Override) -> Decision:
    days = policy.retention_days if override.retention_days is None else override.retention_days
    return Decision(override.record, rule, days)


def retention_days_for(policy: Policy, rule: str) -> int:
    """The current retention of a rule; a rule that is no longer configured gets the default."""
    kind, _, key = rule.partition(":")
    overrides = {"did": policy.did_overrides, "operator": policy.operator_overrides}.get(kind)
    if overrides is not None and key in overrides:
        days = overrides[key].retention_days
        return policy.retention_days if days is None else days
    return policy.retention_days
