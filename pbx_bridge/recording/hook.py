"""The call pipeline's recordings stage: hands answered / transferred / ended calls to the
RecordingService, which does the AMI and file work in background tasks (hooks must be fast)."""

from __future__ import annotations

from pbx_bridge.calls.changes import CallChange
from pbx_bridge.recording.service import RecordingService


class RecordingHook:
    def __init__(self, service: RecordingService) -> None:
        self.service = service

    async def on_change(self, change: CallChange) -> None:
        if change.kind == "answered":
            self.service.call_answered(change.record, change.extension)
        elif change.kind == "transferred":
            self.service.call_transferred(change.record, change.extension)
        elif change.kind == "updated":
            self.service.call_updated(change.record)
        elif change.kind == "ended" and change.backfilled:
            self.service.call_backfilled(change.record)
        elif change.kind == "ended":
            self.service.call_ended(change.record)
