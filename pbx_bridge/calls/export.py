"""The journal as a file: the filtered calls as CSV for Excel (`;`, UTF-8 BOM, headers in the
reader's language) or XLSX (XlsxWriter in constant-memory mode), written a page at a time so
memory stays flat however many calls there are.

The database is read in keyset pages of PAGE calls; CSV goes out as it is made; an XLSX file is
a zip whose directory comes last, so it is written to a temporary file (in a thread, page by
page) and then sent.
"""

from __future__ import annotations

import asyncio
import csv
import io
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncEngine

from crm_sync.spreadsheet import safe_cell
from pbx_bridge.calls.query import CallFilter, select_page
from pbx_bridge.db.schema import calls

PAGE = 2000
COLUMNS = ("id", "started_at", "direction", "status", "customer_number", "customer_name", "did",
           "ad_channel", "operator", "operators_rung", "wait_seconds", "talk_seconds")
# What is read per call: only these columns (whole records cost twice as much to build).
READ = [calls.c.id, calls.c.started_at, calls.c.direction, calls.c.status, calls.c.missed,
        calls.c.customer_number, calls.c.customer_name, calls.c.did, calls.c.operator,
        calls.c.operators_rung, calls.c.wait_seconds, calls.c.talk_seconds]

Labels = Callable[[str], str]
_NUMBER_COLUMNS = frozenset({0, 10, 11})  # id, wait, talk
_TIME_COLUMN = 1
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


class XlsxFile:
    """An XLSX workbook written row by row to a temporary file (XlsxWriter constant_memory:
    each row is flushed as the next begins)."""

    def __init__(self, header: list[str], sheet: str) -> None:
        import xlsxwriter  # here: only exports need it

        self.tmp = tempfile.NamedTemporaryFile(prefix="pbx-export-", suffix=".xlsx", delete=False)
        self.tmp.close()
        self.path = Path(self.tmp.name)
        self.book = xlsxwriter.Workbook(str(self.path), {"constant_memory": True,
                                                         "strings_to_formulas": False,
                                                         "strings_to_numbers": False,
                                                         "strings_to_urls": False})
        self.sheet = self.book.add_worksheet(sheet[:31])
        bold = self.book.add_format({"bold": True})
        self.when = self.book.add_format({"num_format": "yyyy-mm-dd hh:mm:ss"})
        self.sheet.set_column(1, 1, 19)
        self.sheet.set_column(4, 7, 16)
        self.sheet.write_row(0, 0, header, bold)
        self.row = 1

    def write(self, rows: list[list[Any]]) -> None:
        # The hot loop of a big export: the cells' kinds are known by column; a time goes in as
        # Excel's serial day number with a date format (what write_datetime would compute).
        number, string, when = self.sheet.write_number, self.sheet.write_string, self.when
        for values in rows:
            r = self.row
            for col, value in enumerate(values):
                if value is None or value == "":
                    continue
                if col in _NUMBER_COLUMNS:
                    number(r, col, value)
                elif col == _TIME_COLUMN:
                    number(r, col, (value - _EXCEL_EPOCH).total_seconds() / 86400, when)
                else:
                    string(r, col, value)
            self.row = r + 1

    def close(self) -> Path:
        self.book.close()
        return self.path

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


async def write_xlsx(engine: AsyncEngine, f: CallFilter, header: list[str], sheet: str,
                     row: Callable[[Any], list[Any]]) -> Path:
    """The whole export as an XLSX file (the caller sends and deletes it). A page is written in
    a thread while the next one is read."""
    book = await asyncio.to_thread(XlsxFile, header, sheet)
    writing: asyncio.Future[None] | None = None
    try:
        async for records in pages(engine, f):
            values = [row(r) for r in records]
            if writing is not None:
                await writing
            writing = asyncio.ensure_future(asyncio.to_thread(book.write, values))
        if writing is not None:
            await writing
        return await asyncio.to_thread(book.close)
    except BaseException:
        if writing is not None:
            await asyncio.gather(writing, return_exceptions=True)
        await asyncio.to_thread(book.discard)
        raise


def file_name(prefix: str, when: datetime, extension: str) -> str:
    return f"{prefix}-{when:%Y%m%d-%H%M%S}.{extension}"


def label_for(catalog: Mapping[str, str]) -> Labels:
    return lambda key: catalog.get(key, key)
