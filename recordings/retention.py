"""Delete recordings older than their policy's retention, except calls under legal hold.

The rule that decided each recording is stored with it, so the number of days comes from the
current policy. Calls under legal hold are named by a query the application passes in (the
library does not know the calls table). Rows stay, marked `deleted`, as the audit trail.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from recordings.convert import source_paths
from recordings.mixmonitor import Segment
from recordings.policy import Policy, retention_days_for
from recordings.schema import recordings
from recordings.storage import UnsafePath, resolve_stored

log = logging.getLogger("recordings.retention")

# Recordings still being made or converted are never deleted.
FINISHED = ("ready", "truncated", "missing", "failed")


@dataclass
class RetentionReport:
    deleted: list[int] = field(default_factory=list)  # call ids
    held: list[int] = field(default_factory=list)  # call ids kept by legal hold
    errors: list[str] = field(default_factory=list)


def _all_days(policy: Policy) -> list[int]:
    days = [policy.retention_days]
    for override in [*policy.did_overrides.values(), *policy.operator_overrides.values()]:
        if override.retention_days is not None:
            days.append(override.retention_days)
    return [d for d in days if d > 0]


async def apply_retention(
    engine: AsyncEngine, policy: Policy, *, recordings_dir: Path, local_spool_dir: Path,
    now: datetime, held_call_ids: sa.Select[tuple[int]] | None = None, batch: int = 500,
) -> RetentionReport:
    report = RetentionReport()
    days = _all_days(policy)
    if not days:
        return report  # every rule keeps recordings forever
    oldest_allowed = now - timedelta(days=min(days))
    held_expr: sa.ColumnElement[bool] = (
        recordings.c.call_id.in_(held_call_ids) if held_call_ids is not None else sa.false()
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(
            sa.select(recordings.c.id, recordings.c.call_id, recordings.c.rule, recordings.c.state,
                      recordings.c.created_at, recordings.c.stored_path, recordings.c.compressed_path,
                      recordings.c.segments, held_expr.label("held"))
            .where(recordings.c.state.in_(FINISHED), recordings.c.created_at <= oldest_allowed)
            .order_by(recordings.c.created_at).limit(batch)
        )).all()
    for row in rows:
        keep_days = retention_days_for(policy, row.rule)
        if keep_days <= 0 or row.created_at > now - timedelta(days=keep_days):
            continue
        if row.held:
            report.held.append(row.call_id)
            log.info("recording.retention_held", extra={"kv": {
                "call_id": row.call_id, "age_days": (now - row.created_at).days, "rule": row.rule}})
            continue
        problems = _remove_files(row, recordings_dir, local_spool_dir)
        async with engine.begin() as conn:
            await conn.execute(recordings.update().where(recordings.c.id == row.id).values(
                state="deleted", deleted_at=now, updated_at=now,
                last_error="; ".join(problems) if problems else None))
        report.deleted.append(row.call_id)
        report.errors.extend(problems)
        log.info("recording.retention_deleted", extra={"kv": {
            "call_id": row.call_id, "age_days": (now - row.created_at).days, "rule": row.rule,
            "retention_days": keep_days, "problems": "; ".join(problems) or None}})
    return report


def _remove_files(row: sa.Row[tuple[object, ...]], recordings_dir: Path, local_spool_dir: Path) -> list[str]:
    paths: list[Path] = []
    problems: list[str] = []
    for rel in (row.stored_path, row.compressed_path):
        if rel:
            try:
                paths.append(resolve_stored(recordings_dir, str(rel)))
            except UnsafePath as exc:
                problems.append(str(exc))
    if row.state != "ready":
        # Sources kept after a failed or partial conversion go with the recording.
        segments = [Segment.from_dict(s) for s in (row.segments or [])]
        paths.extend(source_paths(local_spool_dir, segments))
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            problems.append(f"could not remove {path.name}: {exc.strerror or exc}")
    return problems
