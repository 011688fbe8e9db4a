"""Which calls `pbx-bridge transcribe --since / --call / --all-missing` queues, and their files.

The recordings table belongs to the recordings feature; it is read by reflection here so this
module does not depend on that feature's code: a table named `recordings` with a `call_id` column
and the WAV's path in one of RECORDING_PATH_COLUMNS (the recordings feature's `stored_path` is
relative to its recordings directory), and, if it has a `state` column, only PLAYABLE_STATES rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from pbx_bridge.db.schema import calls
from recordings.transcription.schema import transcription_jobs, transcripts

RECORDINGS_TABLE = "recordings"
RECORDING_PATH_COLUMNS = ("stored_path", "wav_path", "path", "file_path")
PLAYABLE_STATES = ("ready", "truncated")


class NoRecordingsTable(Exception):
    pass


@dataclass(frozen=True)
class Selected:
    call_id: int
    wav_path: str


async def _recordings(conn: AsyncConnection) -> tuple[sa.Table, sa.Column[str]]:
    def reflect(sync: sa.Connection) -> sa.Table | None:
        if not sa.inspect(sync).has_table(RECORDINGS_TABLE):
            return None
        return sa.Table(RECORDINGS_TABLE, sa.MetaData(), autoload_with=sync)

    table = await conn.run_sync(reflect)
    if table is None or "call_id" not in table.c:
        raise NoRecordingsTable("the database has no recordings table (with call_id) yet")
    for name in RECORDING_PATH_COLUMNS:
        if name in table.c:
            return table, table.c[name]
    raise NoRecordingsTable(f"the recordings table has none of the columns {RECORDING_PATH_COLUMNS}")


def recordings_dir(settings: Any) -> Path:
    """Where relative recording paths start: the recordings feature's `recordings.recordings_dir`
    ("" = <data_dir>/recordings)."""
    configured = getattr(getattr(settings, "recordings", None), "recordings_dir", "")
    return Path(configured) if configured else settings.data_path / "recordings"


async def select_recordings(conn: AsyncConnection, base_dir: Path, *, since: datetime | None = None,
                            call_ids: list[int] | None = None, missing_only: bool = False) -> list[Selected]:
    table, path_column = await _recordings(conn)
    query = (sa.select(table.c.call_id, path_column)
             .join(calls, calls.c.id == table.c.call_id)
             .where(path_column.is_not(None))
             .order_by(table.c.call_id))
    if "state" in table.c:
        query = query.where(table.c.state.in_(PLAYABLE_STATES))
    if since is not None:
        query = query.where(calls.c.started_at >= since)
    if call_ids:
        query = query.where(table.c.call_id.in_(call_ids))
    if missing_only:
        active = sa.select(transcription_jobs.c.call_id).where(
            transcription_jobs.c.state.in_(("queued", "running")))
        query = query.where(table.c.call_id.not_in(sa.select(transcripts.c.call_id)),
                            table.c.call_id.not_in(active))
    rows = await conn.execute(query)
    selected = []
    for call_id, value in rows:
        path = Path(value)
        selected.append(Selected(int(call_id), str(path if path.is_absolute() else base_dir / path)))
    return selected
