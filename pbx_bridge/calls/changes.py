"""What the tracker reports as a call progresses, and what the pipeline's hooks receive."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from pbx_bridge.calls.record import CallRecord

ChangeKind = Literal["started", "ringing", "answered", "transferred", "updated", "ended"]


@dataclass
class CallChange:
    kind: ChangeKind
    record: CallRecord  # a snapshot: hooks may read it; later changes carry new snapshots
    # ringing: the operator's extension being rung; answered: the one who answered;
    # transferred: the new operator.
    extension: str | None = None
    # Filled by the CRM hook before notifications go out (the screen pop's card).
    client: dict[str, Any] | None = None
    # Rebuilt from Asterisk's CEL after the call was over (the bridge was not listening): hooks
    # do its after-call work, but nothing of a call in progress (no screen pop, no recording).
    backfilled: bool = False


class CallHook(Protocol):
    """A stage of the call pipeline, run in order for every change, after the record is saved."""

    async def on_change(self, change: CallChange) -> None: ...


@runtime_checkable
class BatchPreparingHook(CallHook, Protocol):
    """A hook that also sees each saved batch whole before the per-change pass, to do the
    batch's I/O at once (one transaction for many calls). on_change still runs for every change;
    if prepare() fails, on_change must do the work itself."""

    async def prepare(self, changes: Sequence[CallChange]) -> None: ...
