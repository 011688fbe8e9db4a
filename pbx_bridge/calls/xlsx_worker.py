"""The XLSX export's writer, run as a child process of the server (`python -m
pbx_bridge.calls.xlsx_worker PATH`): XlsxWriter in constant-memory mode, fed pages of rows on
stdin.

Why a process: XlsxWriter is pure Python and costs about 4 µs a cell, so 100,000 calls keep a
core busy for about 4 s. In the server that time came on top of reading the calls (one GIL), and
every other request and the call pipeline waited behind it; in a child it runs beside the
reading, on the other core.

The stream on stdin: frames of a 4-byte big-endian length and a `marshal`ed value (fast, and
it only carries lists, strings and numbers; the parent is the only writer). The first frame is
`[header, sheet name]`, each next one a page of rows: [id, start as Excel's serial day number,
text..., wait, talk]. End of input closes the workbook; exit status 0 means the file is whole.
This module imports nothing of the server, so the child starts in about 0.1 s.
"""

from __future__ import annotations

import marshal
import sys
from collections.abc import Iterator
from typing import Any, BinaryIO

NUMBER_COLUMNS = frozenset({0, 10, 11})  # id, wait, talk
TIME_COLUMN = 1
MAX_FRAME = 64 * 2**20  # a page of 2,000 calls is about 0.5 MB


class XlsxFile:
    """An XLSX workbook written row by row (XlsxWriter constant_memory: each row is flushed to
    the file as the next begins)."""

    def __init__(self, path: str, header: list[str], sheet: str) -> None:
        import xlsxwriter

        self.book = xlsxwriter.Workbook(path, {"constant_memory": True,
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
        # The hot loop of a big export: the cells' kinds are known by column.
        number, string, when = self.sheet.write_number, self.sheet.write_string, self.when
        for values in rows:
            r = self.row
            for col, value in enumerate(values):
                if value is None or value == "":
                    continue
                if col in NUMBER_COLUMNS:
                    number(r, col, value)
                elif col == TIME_COLUMN:
                    number(r, col, value, when)
                else:
                    string(r, col, value)
            self.row = r + 1

    def close(self) -> None:
        self.book.close()


def encode(value: Any) -> bytes:
    data = marshal.dumps(value)
    return len(data).to_bytes(4, "big") + data


def frames(stream: BinaryIO) -> Iterator[Any]:
    while head := stream.read(4):
        size = int.from_bytes(head, "big")
        if len(head) < 4 or size > MAX_FRAME:
            raise ValueError(f"broken frame header ({head!r})")
        data = stream.read(size)
        if len(data) < size:
            raise ValueError(f"input ended inside a frame ({len(data)} of {size} bytes)")
        yield marshal.loads(data)  # noqa: S302 - the server that started us is the only writer


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m pbx_bridge.calls.xlsx_worker PATH < frames", file=sys.stderr)
        return 2
    stream = frames(sys.stdin.buffer)
    first = next(stream, None)
    if not (isinstance(first, list) and len(first) == 2):
        print("the first frame must be [header, sheet name]", file=sys.stderr)
        return 2
    book = XlsxFile(argv[0], first[0], first[1])
    for rows in stream:
        book.write(rows)
    book.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
