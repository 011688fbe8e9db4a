"""Calls rebuilt from Asterisk's CEL rows through the same CallTracker that follows live AMI
events (pbx_bridge.cel.adapter turns the rows into those events): the record of a call the
bridge never heard is made exactly as the one it heard."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pbx_bridge.calls.changes import CallChange
from pbx_bridge.calls.record import CallRecord
from pbx_bridge.calls.tracker import CallTracker, TrackerSettings
from pbx_bridge.cel.adapter import events_from_rows
from pbx_bridge.cel.grouping import group_calls
from pbx_bridge.cel.rows import CelRow


@dataclass
class Rebuilt:
    records: list[CallRecord] = field(default_factory=list)  # ended calls, source "cel"
    merged: dict[str, str] = field(default_factory=dict)  # linkedid -> the call it joined
    unfinished: list[str] = field(default_factory=list)  # calls the rows do not end yet


def rebuild_calls(rows: Iterable[CelRow], settings: TrackerSettings) -> Rebuilt:
    """Every call the rows hold (grouped: pbx_bridge.cel.grouping), replayed through one
    tracker, call after call."""
    out = Rebuilt()
    tracker = CallTracker(settings)
    for group in group_calls(rows):
        changes: list[CallChange] = []
        for event in events_from_rows(group, settings.pbx):
            changes += tracker.feed(event)
        changes += tracker.flush_pending_ends()  # CEL has no OriginateResponse to wait for
        for change in changes:
            rec = change.record
            if rec.merged_into:
                out.merged[rec.linkedid] = rec.merged_into
            elif change.kind == "ended":
                rec.source = "cel"
                out.records.append(rec)
    out.unfinished = [rec.linkedid for rec in tracker.live_calls()]
    return out
