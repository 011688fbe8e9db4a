"""The journal as a file: the filtered calls as CSV for Excel (`;`, UTF-8 BOM, headers in the
reader's language) or XLSX (XlsxWriter in constant-memory mode), written a page at a time so
memory stays flat however many calls there are.

The database is read in keyset pages of PAGE calls; CSV goes out as it is made; an XLSX file is
a zip whose directory comes last, so it is written to a temporary file (by a child process,
pbx_bridge.calls.xlsx_worker, page by page) and then sent.
"""

from __future__ import annotations

import asyncio
import csv
import io
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncEngine

from crm_sync.spreadsheet import safe_cell
from pbx_bridge.calls.query import CallFilter, select_page
from pbx_bridge.calls.xlsx_worker import TIME_COLUMN, encode
from pbx_bridge.db.schema import calls

PAGE = 2000
COLUMNS = ("id", "started_at", "direction", "status", "customer_number", "customer_name", "did",
           "ad_channel", "operator", "operators_rung", "wait_seconds", "talk_seconds")
# What is read per call: only these columns (whole records cost twice as much to build).
READ = [calls.c.id, calls.c.started_at, calls.c.direction, calls.c.status, calls.c.missed,
        calls.c.customer_number, calls.c.customer_name, calls.c.did, calls.c.operator,
        calls.c.operators_rung, calls.c.wait_seconds, calls.c.talk_seconds]

Labels = Callable[[str], str]
_EXCEL_EPOCH = datetime(1899, 12, 30)


def csv_safe(value: str) -> str:
    return safe_cell(value)  # the project's one rule (crm_sync.spreadsheet)


def cells(call: Any, tz: ZoneInfo, label: Labels,
          ad_channel: Callable[[str | None], str | None]) -> list[Any]:
    """One call (a row of READ) as the row's values: text, numbers, and the start as a local
    naive datetime."""
    started = call.started_at.astimezone(tz).replace(tzinfo=None, microsecond=0)
    status = ("live" if call.status is None else
              f"missed_{call.status}" if call.missed else call.status)
    return [call.id, started, label(f"direction.{call.direction}"), label(f"export.status.{status}"),
            call.customer_number or "", call.customer_name or "", call.did or "",
            ad_channel(call.did) or "", call.operator or "", ", ".join(call.operators_rung or ()),
            call.wait_seconds, call.talk_seconds]


async def pages(engine: AsyncEngine, f: CallFilter) -> AsyncIterator[list[Any]]:
    after: tuple[datetime, int] | None = None
    while True:
        async with engine.connect() as conn:
            rows = await select_page(conn, f, READ, PAGE, after)
        if rows:
            yield rows
        if len(rows) < PAGE:
            return
        after = (rows[-1].started_at, rows[-1].id)


def headers(label: Labels) -> list[str]:
    return [label(f"export.col.{c}") for c in COLUMNS]


def csv_chunk(rows: list[list[Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";", lineterminator="\r\n")
    for row in rows:
        writer.writerow([_csv_cell(v) for v in row])
    return out.getvalue().encode("utf-8")


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        # Excel in a Russian locale reads 12,5 as a number, 12.5 as text.
        return f"{value:.1f}".replace(".", ",")
    return csv_safe(str(value))


def xlsx_cells(values: list[Any]) -> list[Any]:
    """A row for the XLSX writer: the start as Excel's serial day number (what XlsxWriter's
    write_datetime computes), so only strings and numbers cross to the worker."""
    started = values[TIME_COLUMN]
    out = list(values)
    out[TIME_COLUMN] = (started - _EXCEL_EPOCH).total_seconds() / 86400
    return out


class ExportFailed(Exception):
    """The XLSX writer process did not produce a whole file (its stderr says why)."""


async def write_xlsx(engine: AsyncEngine, f: CallFilter, header: list[str], sheet: str,
                     row: Callable[[Any], list[Any]]) -> Path:
    """The whole export as an XLSX file (the caller sends and deletes it), written by a child
    process (pbx_bridge.calls.xlsx_worker) while this one reads the next pages."""
    tmp = tempfile.NamedTemporaryFile(prefix="pbx-export-", suffix=".xlsx", delete=False)
    tmp.close()
    path = Path(tmp.name)
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pbx_bridge.calls.xlsx_worker", str(path),
        stdin=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert worker.stdin is not None and worker.stderr is not None
    try:
        try:
            worker.stdin.write(encode([header, sheet]))
            async for records in pages(engine, f):
                worker.stdin.write(encode([xlsx_cells(row(r)) for r in records]))
                await worker.stdin.drain()
            worker.stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the worker is gone: its status and stderr below say why
        error = await worker.stderr.read()
        if await worker.wait() != 0:
            raise ExportFailed(f"the XLSX writer exited with {worker.returncode}: "
                               f"{error.decode(errors='replace')[-500:]}")
        return path
    except BaseException:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()
        await asyncio.to_thread(path.unlink, True)
        raise


def file_name(prefix: str, when: datetime, extension: str) -> str:
    return f"{prefix}-{when:%Y%m%d-%H%M%S}.{extension}"


def label_for(catalog: Mapping[str, str]) -> Labels:
    return lambda key: catalog.get(key, key)
