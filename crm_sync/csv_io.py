"""Client cards from and to CSV: column mapping, encoding detection (UTF-8 / cp1251), rows that
cannot be imported reported with the reason, duplicates merged by phone, one transaction.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TextIO

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from tqdm import tqdm

from crm_sync import phones
from crm_sync.cards import (
    MAX_PHONES_PER_CARD,
    CardError,
    CardInput,
    PhoneEntry,
    add_phones,
    clean_emails,
    clean_name,
    clean_responsible,
    clean_tags,
    create_cards,
    iso,
    owners_by_e164,
    prepare_phones,
)
from crm_sync.matching import MatchSettings
from crm_sync.schema import Db, client_emails, client_phones, clients
from crm_sync.spreadsheet import safe_row, unescape_cell

Encoding = Literal["auto", "utf-8", "cp1251"]
FIELDS = ("name", "company", "phone", "email", "responsible", "source", "tags", "notes")
# Header names recognised without --map (compared casefolded, spaces and dashes ignored).
ALIASES: dict[str, tuple[str, ...]] = {
    "name": ("name", "fullname", "client", "contact", "имя", "фио", "клиент", "контакт", "название"),
    "company": ("company", "organization", "organisation", "компания", "организация"),
    "phone": ("phone", "phones", "tel", "telephone", "mobile", "телефон", "телефоны", "мобильный"),
    "email": ("email", "emails", "mail", "почта", "электроннаяпочта"),
    "responsible": ("responsible", "manager", "operator", "extension", "ответственный", "менеджер"),
    "source": ("source", "channel", "источник", "канал"),
    "tags": ("tags", "tag", "теги", "метки"),
    "notes": ("notes", "note", "comment", "comments", "заметки", "комментарий", "примечание"),
}
_LIST_SPLIT = re.compile(r"[,;\n|]+")
EXPORT_COLUMNS = (
    "id",
    "name",
    "company",
    "phones",
    "emails",
    "responsible",
    "source",
    "tags",
    "notes",
    "created_at",
    "last_activity_at",
)


class CsvImportError(ValueError):
    """The file as a whole cannot be imported (encoding, columns); nothing was written."""


@dataclass(frozen=True)
class Rejected:
    line: int  # line number in the file (the header is line 1)
    reason: str


@dataclass
class ImportReport:
    encoding: str
    delimiter: str
    columns: dict[str, str]  # file column -> field
    ignored_columns: list[str]
    rows: int = 0
    created: int = 0
    merged: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    dry_run: bool = False


def decode(data: bytes, encoding: Encoding = "auto") -> tuple[str, str]:
    """The file's text and the encoding used. Auto: UTF-8 (with or without BOM), else cp1251."""
    if encoding in ("utf-8", "auto"):
        try:
            return data.decode("utf-8-sig"), "utf-8"
        except UnicodeDecodeError as exc:
            if encoding == "utf-8":
                line = data[: exc.start].count(b"\n") + 1
                raise CsvImportError(
                    f"the file is not valid UTF-8 (line {line}); try --encoding cp1251"
                ) from None
    try:
        text = data.decode("cp1251")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise CsvImportError(f"the file is neither UTF-8 nor cp1251 (line {line})") from None
    if encoding == "auto" and not _plausible(text):
        raise CsvImportError(
            "cannot tell the file's encoding (not UTF-8, and not text in cp1251); pass --encoding"
        )
    return text, "cp1251"


def _plausible(text: str) -> bool:
    """Text in cp1251 is mostly letters, digits, punctuation and spaces, not control characters."""
    sample = text[:20000]
    if not sample:
        return True
    odd = sum(1 for ch in sample if unicodedata.category(ch) in ("Cc", "Co", "Cn") and ch not in "\r\n\t")
    return odd / len(sample) < 0.01


def _norm_header(text: str) -> str:
    return re.sub(r"[\s_\-.]+", "", text.casefold())


def resolve_columns(headers: Sequence[str], mapping: Mapping[str, str]) -> tuple[dict[int, str], list[str]]:
    """File column index -> field, and the ignored columns. Raises CsvImportError when the mapping
    names an unknown field or column, or when no column gives names or phones."""
    if not headers or not any(h.strip() for h in headers):
        raise CsvImportError("the file has no header row")
    result: dict[int, str] = {}
    for column, target in mapping.items():
        if target not in FIELDS:
            raise CsvImportError(
                f"--map {column}={target}: unknown field {target!r} (fields: {', '.join(FIELDS)})"
            )
        matches = [i for i, h in enumerate(headers) if h.strip() == column.strip()]
        if not matches:
            raise CsvImportError(
                f"--map {column}={target}: the file has no column {column!r} "
                f"(columns: {', '.join(repr(h) for h in headers)})"
            )
        result[matches[0]] = target
    alias_to_field = {_norm_header(a): f for f, names in ALIASES.items() for a in names}
    for i, header in enumerate(headers):
        if i in result:
            continue
        guessed = alias_to_field.get(_norm_header(header))
        if guessed is not None:
            result[i] = guessed
    found = set(result.values())
    missing = [f for f in ("name", "phone") if f not in found]
    if missing:
        raise CsvImportError(
            f"no column for {' and '.join(missing)} (columns: {', '.join(repr(h) for h in headers)}); "
            f"use --map COLUMN={missing[0]}"
        )
    ignored = [h for i, h in enumerate(headers) if i not in result]
    return result, ignored


def _sniff_delimiter(text: str) -> str:
    first = text.split("\n", 1)[0]
    counts = {d: first.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


@dataclass
class _Row:
    line: int
    values: dict[str, list[str]]

    def one(self, name: str) -> str | None:
        items = [v for v in self.values.get(name, []) if v.strip()]
        return " ".join(items).strip() if items else None

    def many(self, name: str) -> list[str]:
        return [p.strip() for v in self.values.get(name, []) for p in _LIST_SPLIT.split(v) if p.strip()]


async def import_csv(
    engine: AsyncEngine,
    data: bytes,
    settings: MatchSettings,
    now: datetime,
    *,
    mapping: Mapping[str, str] | None = None,
    encoding: Encoding = "auto",
    dry_run: bool = False,
    allow_unparsed: bool = False,
    progress: bool = False,
    batch: int = 500,
) -> ImportReport:
    """Import cards; with dry_run everything is checked and counted, then rolled back."""
    text, used = decode(data, encoding)
    delimiter = _sniff_delimiter(text)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        headers = next(reader)
    except StopIteration:
        raise CsvImportError("the file is empty") from None
    except csv.Error as exc:
        raise CsvImportError(f"line 1: {exc}") from None
    columns, ignored = resolve_columns(headers, mapping or {})
    report = ImportReport(
        encoding=used,
        delimiter=delimiter,
        columns={headers[i]: f for i, f in columns.items()},
        ignored_columns=ignored,
        dry_run=dry_run,
    )
    total_lines = max(0, text.count("\n"))
    async with engine.connect() as conn:
        trans = await conn.begin()
        try:
            importer = _Importer(conn, settings, now, allow_unparsed, report)
            bar = tqdm(total=total_lines, unit="row", disable=not progress, desc="import")
            chunk: list[_Row] = []
            while True:
                try:
                    cells = next(reader)
                except StopIteration:
                    break
                except csv.Error as exc:
                    report.rejected.append(Rejected(reader.line_num, f"unreadable CSV: {exc}"))
                    continue
                bar.update(1)
                if not any(c.strip() for c in cells):
                    continue
                report.rows += 1
                row = _Row(reader.line_num, {})
                for i, target in columns.items():
                    if i < len(cells):
                        row.values.setdefault(target, []).append(unescape_cell(cells[i]))
                if len(cells) > len(headers) and any(c.strip() for c in cells[len(headers) :]):
                    report.rejected.append(
                        Rejected(row.line, f"{len(cells)} cells but {len(headers)} columns")
                    )
                    continue
                chunk.append(row)
                if len(chunk) >= batch:
                    await importer.flush(chunk)
                    chunk = []
            await importer.flush(chunk)
            bar.close()
        except BaseException:
            await trans.rollback()
            raise
        if dry_run:
            await trans.rollback()
        else:
            await trans.commit()
    report.rejected.sort(key=lambda r: r.line)
    return report


@dataclass
class _Prepared:
    line: int
    card: CardInput
    entries: list[PhoneEntry]


def _phone_key(entry: PhoneEntry) -> str:
    return entry.e164 or "raw:" + phones.digits(entry.raw)


class _Importer:
    """Rows in batches: validated in Python, one query for the cards that already hold the
    batch's numbers, the batch's new cards inserted together. A row whose number is already on a
    card (in the database, or earlier in the file) is merged into that card."""

    def __init__(
        self, db: Db, settings: MatchSettings, now: datetime, allow_unparsed: bool, report: ImportReport
    ) -> None:
        self.db = db
        self.settings = settings
        self.now = now
        self.allow_unparsed = allow_unparsed
        self.report = report
        self.owner: dict[str, int] = {}  # E.164 -> card id, for cards in the database

    def prepare(self, row: _Row) -> _Prepared:
        name = clean_name(row.one("name"))
        raw_phones = row.many("phone")
        if not raw_phones:
            raise CardError("phone", "no phone number")
        entries = prepare_phones(raw_phones, self.settings, allow_unparsed=self.allow_unparsed)
        card = CardInput(
            name=name,
            phones=[p.raw for p in entries],
            emails=clean_emails(row.many("email")),
            company=row.one("company"),
            responsible=clean_responsible(row.one("responsible")),
            source=row.one("source"),
            tags=clean_tags(row.many("tags")),
            notes=row.one("notes"),
        )
        return _Prepared(row.line, card, entries)

    async def flush(self, rows: list[_Row]) -> None:
        prepared: list[_Prepared] = []
        for row in rows:
            try:
                prepared.append(self.prepare(row))
            except CardError as exc:
                self.report.rejected.append(Rejected(row.line, str(exc)))
        unknown = {p.e164 for item in prepared for p in item.entries if p.e164 and p.e164 not in self.owner}
        if unknown:
            self.owner.update(await owners_by_e164(self.db, sorted(unknown)))
        new: list[_Prepared] = []
        pending: dict[str, int] = {}  # E.164 -> index in `new`
        for item in prepared:
            numbers = [p.e164 for p in item.entries if p.e164]
            in_db = next((self.owner[n] for n in numbers if n in self.owner), None)
            in_batch = next((pending[n] for n in numbers if n in pending), None)
            try:
                if in_db is not None:
                    await _merge_into(self.db, in_db, item, self.settings, self.now, self.allow_unparsed)
                elif in_batch is not None:
                    _merge_prepared(new[in_batch], item)
                else:
                    new.append(item)
            except CardError as exc:
                self.report.rejected.append(Rejected(item.line, str(exc)))
                continue
            if in_db is None and in_batch is None:
                self.report.created += 1
                in_batch = len(new) - 1
            else:
                self.report.merged += 1
            if in_db is None and in_batch is not None:
                for n in numbers:
                    pending[n] = in_batch
        if new:
            ids = await create_cards(
                self.db,
                [item.card for item in new],
                self.settings,
                self.now,
                allow_unparsed=self.allow_unparsed,
            )
            for item, client_id in zip(new, ids, strict=True):
                for p in item.entries:
                    if p.e164:
                        self.owner[p.e164] = client_id


def _merge_prepared(into: _Prepared, item: _Prepared) -> None:
    """A later row of the same batch with one of the card's numbers: combined before inserting."""
    keys = {_phone_key(p) for p in into.entries}
    extra = [p for p in item.entries if _phone_key(p) not in keys]
    if len(into.entries) + len(extra) > MAX_PHONES_PER_CARD:
        raise CardError("phones", f"a card holds at most {MAX_PHONES_PER_CARD} phone numbers")
    into.entries.extend(extra)
    into.card.phones.extend(p.raw for p in extra)
    into.card.emails.extend(e for e in item.card.emails if e not in into.card.emails)
    into.card.tags.extend(t for t in item.card.tags if t not in into.card.tags)
    for key in ("company", "responsible", "source", "notes"):
        if not getattr(into.card, key) and getattr(item.card, key):
            setattr(into.card, key, getattr(item.card, key))


async def _merge_into(
    db: Db, client_id: int, item: _Prepared, settings: MatchSettings, now: datetime, allow_unparsed: bool
) -> None:
    """Merge a row into a card already in the database: new numbers, e-mails and tags added,
    empty fields filled, nothing overwritten."""
    await add_phones(db, client_id, item.card.phones, settings, now, allow_unparsed=allow_unparsed)
    card = (await db.execute(sa.select(clients).where(clients.c.id == client_id))).one()
    fill: dict[str, Any] = {"updated_at": now}
    for key in ("company", "responsible", "source", "notes"):
        value = getattr(item.card, key)
        if value and not getattr(card, key):
            fill[key] = value
    merged_tags = list(card.tags or []) + [t for t in item.card.tags if t not in (card.tags or [])]
    if merged_tags != list(card.tags or []):
        fill["tags"] = merged_tags
    await db.execute(sa.update(clients).where(clients.c.id == client_id).values(fill))
    have = set(
        (
            await db.execute(sa.select(client_emails.c.email).where(client_emails.c.client_id == client_id))
        ).scalars()
    )
    new_emails = [e for e in item.card.emails if e not in have]
    if new_emails:
        await db.execute(sa.insert(client_emails), [{"client_id": client_id, "email": e} for e in new_emails])


async def export_csv(db: Db, out: TextIO, *, batch: int = 1000) -> int:
    """Every card as one CSV row (UTF-8 text; phones and e-mails joined by "; "). Returns the count."""
    writer = csv.writer(out)
    writer.writerow(EXPORT_COLUMNS)
    last_id = 0
    count = 0
    while True:
        rows = (
            await db.execute(
                sa.select(clients).where(clients.c.id > last_id).order_by(clients.c.id).limit(batch)
            )
        ).all()
        if not rows:
            return count
        ids = [r.id for r in rows]
        phone_map: dict[int, list[str]] = {}
        for p in await db.execute(
            sa.select(client_phones.c.client_id, client_phones.c.e164, client_phones.c.raw)
            .where(client_phones.c.client_id.in_(ids))
            .order_by(client_phones.c.id)
        ):
            phone_map.setdefault(p.client_id, []).append(p.e164 or p.raw)
        email_map: dict[int, list[str]] = {}
        for e in await db.execute(
            sa.select(client_emails.c.client_id, client_emails.c.email)
            .where(client_emails.c.client_id.in_(ids))
            .order_by(client_emails.c.id)
        ):
            email_map.setdefault(e.client_id, []).append(e.email)
        for r in rows:
            writer.writerow(safe_row(
                [
                    r.id,
                    r.name,
                    r.company or "",
                    "; ".join(phone_map.get(r.id, [])),
                    "; ".join(email_map.get(r.id, [])),
                    r.responsible or "",
                    r.source or "",
                    "; ".join(r.tags or []),
                    r.notes or "",
                    iso(r.created_at),
                    iso(r.last_activity_at),
                ]
            ))
            count += 1
        last_id = ids[-1]
