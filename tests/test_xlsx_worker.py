"""The XLSX export's writer process (pbx_bridge.calls.xlsx_worker) and how the server drives it:
a whole file read back with openpyxl; broken input is a clear error; a failure on either side
leaves no temporary file and no process behind."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from pbx_bridge.calls import export
from pbx_bridge.calls.xlsx_worker import encode

HEADER = ["№", "Начало", "Направление", "Статус", "Номер", "Имя", "Линия", "Канал", "Ответил",
          "Звонил у", "Ожидание", "Разговор"]


def _run_worker(path: Path, stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "pbx_bridge.calls.xlsx_worker", str(path)],
                          input=stdin, capture_output=True, timeout=60, check=False)


def test_worker_writes_a_whole_workbook(tmp_path: Path) -> None:
    path = tmp_path / "out.xlsx"
    started = datetime(2026, 3, 8, 9, 30, 15)
    serial = (started - datetime(1899, 12, 30)).total_seconds() / 86400
    pages = [
        [[1, serial, "Входящий", "Отвечен", "+79161234567", "=HYPERLINK(1)", "", "", "101",
          "101, 102", 5.0, 30.5]],
        [[2, serial, "Исходящий", "Занято", "+74951234567", "", None, "", "", "", None, None]],
    ]
    done = _run_worker(path, encode([HEADER, "Звонки"]) + b"".join(encode(p) for p in pages))
    assert done.returncode == 0, done.stderr
    book = openpyxl.load_workbook(path, read_only=True)
    assert book.sheetnames == ["Звонки"]
    rows = list(book.active.iter_rows(values_only=True))
    assert list(rows[0]) == HEADER
    assert rows[1][:6] == (1, started, "Входящий", "Отвечен", "+79161234567", "=HYPERLINK(1)")
    assert rows[1][9:] == ("101, 102", 5, 30.5)
    assert rows[2][:5] == (2, started, "Исходящий", "Занято", "+74951234567")
    assert rows[2][5:] == (None,) * 7  # empty cells stay empty
    assert len(rows) == 3


@pytest.mark.parametrize(("stdin", "message"), [
    (encode([HEADER, "Звонки"]) + encode([[1]])[:-2], b"input ended inside a frame"),
    (encode([HEADER, "Звонки"]) + b"\xff\xff\xff\xff", b"broken frame header"),
    (encode({"header": HEADER}), b"the first frame must be [header, sheet name]"),
])
def test_worker_rejects_broken_input_with_a_clear_message(tmp_path: Path, stdin: bytes,
                                                          message: bytes) -> None:
    done = _run_worker(tmp_path / "out.xlsx", stdin)
    assert done.returncode != 0
    assert message in done.stderr


class _Call:
    def __init__(self, i: int) -> None:
        self.i = i


def _pages(count: int, fail_at: int | None = None) -> Any:
    async def pages(_engine: Any, _f: Any) -> AsyncIterator[list[_Call]]:
        for page in range(count):
            if page == fail_at:
                raise RuntimeError("the database went away")
            yield [_Call(page * 10 + i) for i in range(10)]
    return pages


def _row(call: _Call) -> list[Any]:
    return [call.i, datetime(2026, 1, 1, 12, 0, 0), "Входящий", "Отвечен", f"+7916000{call.i:04d}",
            "", "", "", "101", "101", 1.0, 2.0]


def _leftovers() -> list[Path]:
    return sorted(Path(tempfile.gettempdir()).glob("pbx-export-*.xlsx"))


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


async def test_server_side_writes_pages_through_the_worker(private_tmp: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export, "pages", _pages(25))
    path = await export.write_xlsx(None, None, HEADER, "Звонки", _row)  # type: ignore[arg-type]
    rows = list(openpyxl.load_workbook(path, read_only=True).active.iter_rows(values_only=True))
    assert len(rows) == 251 and [r[0] for r in rows[1:]] == list(range(250))
    assert rows[250][1] == datetime(2026, 1, 1, 12, 0, 0)


async def test_a_failed_read_kills_the_worker_and_leaves_no_file(
        private_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export, "pages", _pages(5, fail_at=3))
    started: list[asyncio.subprocess.Process] = []
    spawn = asyncio.create_subprocess_exec

    async def spy(*args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
        proc = await spawn(*args, **kwargs)
        started.append(proc)
        return proc

    monkeypatch.setattr(asyncio, "create_subprocess_exec", spy)
    with pytest.raises(RuntimeError, match="the database went away"):
        await export.write_xlsx(None, None, HEADER, "Звонки", _row)  # type: ignore[arg-type]
    assert _leftovers() == []
    assert len(started) == 1 and started[0].returncode is not None


async def test_a_failing_worker_is_an_error_that_says_why(private_tmp: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export, "pages", _pages(3))
    with pytest.raises(export.ExportFailed, match="the XLSX writer exited with 1") as failed:
        await export.write_xlsx(None, None, None, "Звонки", _row)  # type: ignore[arg-type]
    assert "TypeError" in str(failed.value)  # the end of its traceback
    assert _leftovers() == []
