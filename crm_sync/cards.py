"""Client cards: create, update, read, search. Everything is validated before anything is written,
and the caller's transaction makes a card all-or-nothing.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypedDict

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from crm_sync import phones
from crm_sync.matching import Candidate, MatchSettings
from crm_sync.phone_search import PartialNumberError, digit_patterns, ids_containing
from crm_sync.schema import (
    Db,
    client_emails,
    client_phones,
    clients,
    phone_claims,
    tasks,
    timeline_entries,
)

MAX_PHONES_PER_CARD = 10_000
MAX_NAME_LENGTH = 255
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# ASCII digits only: \d and str.isdigit() also accept other scripts' digits ("١٠٢").
_EXTENSION = re.compile(r"^[0-9]{1,16}$")
# The migration's FTS5 table over client_phones (e164, suffix), SQLite only.
PHONES_FTS_TABLE = "client_phones_fts"


class CardError(ValueError):
    """Invalid card data; `field` names what is wrong, the message says why."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.reason = message


class CardNotFound(LookupError):
    pass


@dataclass(frozen=True)
class PhoneEntry:
    raw: str
    e164: str | None
    suffix: str | None


@dataclass
class CardInput:
    name: str
    phones: list[str] = field(default_factory=list)
    emails: list[str] = field(default_factory=list)
    company: str | None = None
    responsible: str | None = None
    source: str | None = None
    tags: list[str] = field(default_factory=list)
    notes: str | None = None


@dataclass
class CardChanges:
    """A partial update: None leaves a field as it is."""

    name: str | None = None
    company: str | None = None
    responsible: str | None = None
    source: str | None = None
    tags: list[str] | None = None
    notes: str | None = None
    add_phones: list[str] = field(default_factory=list)
    remove_phones: list[str] = field(default_factory=list)  # E.164 or the text as stored
    emails: list[str] | None = None  # replaces the list


class PhoneOut(TypedDict):
    e164: str | None
    raw: str


class Card(TypedDict):
    id: int
    name: str
    company: str | None
    responsible: str | None
    source: str | None
    tags: list[str]
    notes: str | None
    auto_created: bool
    created_at: str
    updated_at: str
    last_activity_at: str
    phones: list[PhoneOut]
    phone_count: int
    emails: list[str]


class CardSummary(TypedDict):
    """What the screen pop shows while the phone rings."""

    id: int
    name: str
    company: str | None
    responsible: str | None
    phones: list[PhoneOut]
    tags: list[str]
    ambiguous: bool
    # The card's latest call on its timeline ({direction, status, operator, started_at,
    # talk_seconds}) and its open tasks (the most urgent first, at most 5).
    last_call: dict[str, Any] | None
    open_tasks: list[dict[str, Any]]


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- validation ------------------------------------------------------------------------------


def clean_name(name: str | None) -> str:
    text = " ".join((name or "").split())
    if not text:
        raise CardError("name", "the name is empty")
    if len(text) > MAX_NAME_LENGTH:
        raise CardError("name", f"the name is longer than {MAX_NAME_LENGTH} characters")
    return text


def prepare_phone(text: str, settings: MatchSettings, *, allow_unparsed: bool = False) -> PhoneEntry:
    raw = (text or "").strip()
    if not raw:
        raise CardError("phones", "a phone number is empty")
    if len(raw) > 64:
        raise CardError("phones", f"{raw[:20]!r}... is longer than 64 characters")
    if phones.is_extension(raw, settings.max_extension_length):
        raise CardError("phones", f"{raw!r} is an internal extension, not a client's number")
    e164 = phones.normalize(raw, settings.region, settings.max_extension_length)
    suffix = phones.suffix_key(e164 or raw, settings.match_digits)
    if e164 is None:
        if not allow_unparsed:
            raise CardError("phones", f"{raw!r} is not a valid phone number for region {settings.region}")
        if suffix is None:
            raise CardError("phones", f"{raw!r} has too few digits to be a phone number")
    return PhoneEntry(raw=raw, e164=e164, suffix=suffix)


def prepare_phones(
    texts: Iterable[str], settings: MatchSettings, *, allow_unparsed: bool = False
) -> list[PhoneEntry]:
    """Validated and de-duplicated (same E.164, or same text when unparsed), order kept."""
    out: list[PhoneEntry] = []
    seen: set[str] = set()
    for text in texts:
        entry = prepare_phone(text, settings, allow_unparsed=allow_unparsed)
        key = entry.e164 or "raw:" + phones.digits(entry.raw)
        if key in seen:
            continue
        seen.add(key)
        out.append(entry)
        if len(out) > MAX_PHONES_PER_CARD:
            raise CardError("phones", f"a card holds at most {MAX_PHONES_PER_CARD} phone numbers")
    return out


def clean_emails(texts: Iterable[str]) -> list[str]:
    # A dict de-duplicates in linear time and keeps the first-seen order (a list's `in` made
    # 25,000 e-mails or tags take seconds on the event loop).
    out: dict[str, None] = {}
    for text in texts:
        email = (text or "").strip().lower()
        if len(email) > 255 or not _EMAIL.match(email):
            raise CardError("emails", f"{text[:40]!r} is not an e-mail address")
        out[email] = None
    return list(out)


def clean_tags(tags: Iterable[str]) -> list[str]:
    out: dict[str, None] = {}  # linear de-duplication, order kept (see clean_emails)
    for tag in tags:
        if not isinstance(tag, str) or not tag.strip():
            raise CardError("tags", "a tag is empty")
        if len(tag) > 64:
            raise CardError("tags", f"tag {tag[:20]!r}... is longer than 64 characters")
        out[tag.strip()] = None
    return list(out)


def clean_responsible(ext: str | None) -> str | None:
    if ext is None or not ext.strip():
        return None
    if not _EXTENSION.match(ext.strip()):
        raise CardError("responsible", f"{ext!r} is not an extension (digits only)")
    return ext.strip()


def _optional_text(value: str | None, field_name: str, limit: int) -> str | None:
    if value is None or not value.strip():
        return None
    if len(value.strip()) > limit:
        raise CardError(field_name, f"longer than {limit} characters")
    return value.strip()


# --- writing ---------------------------------------------------------------------------------


async def create_card(
    db: Db,
    card: CardInput,
    settings: MatchSettings,
    now: datetime,
    *,
    allow_unparsed: bool = False,
    auto_created: bool = False,
) -> int:
    """Insert a card with its phones and e-mails; raises CardError before writing anything."""
    created = await create_card_returning(db, card, settings, now, allow_unparsed=allow_unparsed,
                                          auto_created=auto_created)
    return created["id"]


async def create_card_returning(
    db: Db,
    card: CardInput,
    settings: MatchSettings,
    now: datetime,
    *,
    allow_unparsed: bool = False,
    auto_created: bool = False,
) -> Card:
    """create_card, answering the new card as get_card would (built from what was written, with
    no read back: the call pipeline creates a card for most new callers)."""
    row = _card_row(card, now, auto_created)
    phone_entries = prepare_phones(card.phones, settings, allow_unparsed=allow_unparsed)
    emails = clean_emails(card.emails)
    client_id = int(
        (await db.execute(sa.insert(clients).values(row).returning(clients.c.id))).scalar_one()
    )
    await _insert_phones(db, client_id, phone_entries)
    if emails:
        await db.execute(sa.insert(client_emails), [{"client_id": client_id, "email": e} for e in emails])
    return Card(
        id=client_id,
        name=row["name"],
        company=row["company"],
        responsible=row["responsible"],
        source=row["source"],
        tags=list(row["tags"]),
        notes=row["notes"],
        auto_created=auto_created,
        created_at=iso(now),
        updated_at=iso(now),
        last_activity_at=iso(now),
        phones=[PhoneOut(e164=p.e164, raw=p.raw) for p in phone_entries],
        phone_count=len(phone_entries),
        emails=list(emails),
    )


def _card_row(card: CardInput, now: datetime, auto_created: bool) -> dict[str, Any]:
    """The clients row of a new card, its texts checked and cleaned (CardError if invalid)."""
    name = clean_name(card.name)
    return {
        "name": name,
        "name_key": name.casefold(),
        "company": _optional_text(card.company, "company", 255),
        "responsible": clean_responsible(card.responsible),
        "source": _optional_text(card.source, "source", 128),
        "tags": clean_tags(card.tags),
        "notes": _optional_text(card.notes, "notes", 100_000),
        "auto_created": auto_created,
        "created_at": now,
        "updated_at": now,
        "last_activity_at": now,
    }


async def create_cards(
    db: Db,
    cards: Sequence[CardInput],
    settings: MatchSettings,
    now: datetime,
    *,
    allow_unparsed: bool = False,
) -> list[int]:
    """Insert many cards at once (imports); all are validated before anything is written."""
    values: list[dict[str, Any]] = []
    phone_lists: list[list[PhoneEntry]] = []
    email_lists: list[list[str]] = []
    for card in cards:
        values.append(_card_row(card, now, auto_created=False))
        phone_lists.append(prepare_phones(card.phones, settings, allow_unparsed=allow_unparsed))
        email_lists.append(clean_emails(card.emails))
    if not values:
        return []
    result = await db.execute(
        sa.insert(clients).returning(clients.c.id, sort_by_parameter_order=True), values
    )
    ids = [int(i) for i in result.scalars()]
    phone_rows = [
        {"client_id": cid, "e164": p.e164, "raw": p.raw, "suffix": p.suffix}
        for cid, entries in zip(ids, phone_lists, strict=True)
        for p in entries
    ]
    if phone_rows:
        await db.execute(sa.insert(client_phones), phone_rows)
    email_rows = [
        {"client_id": cid, "email": e} for cid, emails in zip(ids, email_lists, strict=True) for e in emails
    ]
    if email_rows:
        await db.execute(sa.insert(client_emails), email_rows)
    return ids


async def _insert_phones(db: Db, client_id: int, entries: Sequence[PhoneEntry]) -> None:
    if entries:
        await db.execute(
            sa.insert(client_phones),
            [{"client_id": client_id, "e164": p.e164, "raw": p.raw, "suffix": p.suffix} for p in entries],
        )


async def add_phones(
    db: Db,
    client_id: int,
    texts: Sequence[str],
    settings: MatchSettings,
    now: datetime,
    *,
    allow_unparsed: bool = False,
) -> int:
    """Add numbers the card does not have yet; returns how many were added."""
    entries = prepare_phones(texts, settings, allow_unparsed=allow_unparsed)
    existing = await _phone_keys(db, client_id)
    new = [p for p in entries if (p.e164 or "raw:" + phones.digits(p.raw)) not in existing]
    if len(existing) + len(new) > MAX_PHONES_PER_CARD:
        raise CardError("phones", f"a card holds at most {MAX_PHONES_PER_CARD} phone numbers")
    await _insert_phones(db, client_id, new)
    if new:
        await _touch_updated(db, client_id, now)
    return len(new)


async def _phone_keys(db: Db, client_id: int) -> set[str]:
    rows = await db.execute(
        sa.select(client_phones.c.e164, client_phones.c.raw).where(client_phones.c.client_id == client_id)
    )
    return {r.e164 or "raw:" + phones.digits(r.raw) for r in rows}


async def update_card(
    db: Db,
    client_id: int,
    changes: CardChanges,
    settings: MatchSettings,
    now: datetime,
    *,
    allow_unparsed: bool = False,
) -> None:
    """Apply a partial update; validation happens before the first write."""
    if not await card_exists(db, client_id):
        raise CardNotFound(f"no client card {client_id}")
    values: dict[str, Any] = {}
    if changes.name is not None:
        values["name"] = clean_name(changes.name)
        values["name_key"] = values["name"].casefold()
    if changes.company is not None:
        values["company"] = _optional_text(changes.company, "company", 255)
    if changes.responsible is not None:
        values["responsible"] = clean_responsible(changes.responsible)
    if changes.source is not None:
        values["source"] = _optional_text(changes.source, "source", 128)
    if changes.tags is not None:
        values["tags"] = clean_tags(changes.tags)
    if changes.notes is not None:
        values["notes"] = _optional_text(changes.notes, "notes", 100_000)
    new_phones = prepare_phones(changes.add_phones, settings, allow_unparsed=allow_unparsed)
    emails = clean_emails(changes.emails) if changes.emails is not None else None
    values["updated_at"] = now
    await db.execute(sa.update(clients).where(clients.c.id == client_id).values(values))
    for text in changes.remove_phones:
        e164 = phones.normalize(text, settings.region, settings.max_extension_length)
        cond = client_phones.c.raw == text.strip()
        if e164 is not None:
            cond = sa.or_(cond, client_phones.c.e164 == e164)
        await db.execute(sa.delete(client_phones).where(client_phones.c.client_id == client_id, cond))
        if e164 is not None:
            # A released number may get a new card from a later call.
            await db.execute(
                sa.delete(phone_claims).where(
                    phone_claims.c.client_id == client_id, phone_claims.c.e164 == e164
                )
            )
    if new_phones:
        await add_phones(
            db, client_id, [p.raw for p in new_phones], settings, now, allow_unparsed=allow_unparsed
        )
    if emails is not None:
        await db.execute(sa.delete(client_emails).where(client_emails.c.client_id == client_id))
        if emails:
            await db.execute(sa.insert(client_emails), [{"client_id": client_id, "email": e} for e in emails])


async def _touch_updated(db: Db, client_id: int, now: datetime) -> None:
    await db.execute(sa.update(clients).where(clients.c.id == client_id).values(updated_at=now))


async def touch_activity(db: Db, client_id: int, at: datetime) -> None:
    """Record activity (a call) so this card wins ambiguous matches; never moves backwards."""
    await db.execute(
        sa.update(clients)
        .where(clients.c.id == client_id, clients.c.last_activity_at < at)
        .values(last_activity_at=at)
    )


# --- reading ---------------------------------------------------------------------------------


async def card_exists(db: Db, client_id: int) -> bool:
    found = await db.execute(sa.select(clients.c.id).where(clients.c.id == client_id))
    return found.first() is not None


async def get_card(db: Db, client_id: int, *, phones_limit: int | None = None) -> Card | None:
    row = (await db.execute(sa.select(clients).where(clients.c.id == client_id))).first()
    if row is None:
        return None
    query = (
        sa.select(client_phones.c.e164, client_phones.c.raw)
        .where(client_phones.c.client_id == client_id)
        .order_by(client_phones.c.id)
    )
    if phones_limit is not None:
        query = query.limit(phones_limit)
    phone_rows = (await db.execute(query)).all()
    count = (
        await db.execute(
            sa.select(sa.func.count())
            .select_from(client_phones)
            .where(client_phones.c.client_id == client_id)
        )
    ).scalar_one()
    emails = (
        (
            await db.execute(
                sa.select(client_emails.c.email)
                .where(client_emails.c.client_id == client_id)
                .order_by(client_emails.c.id)
            )
        )
        .scalars()
        .all()
    )
    return Card(
        id=row.id,
        name=row.name,
        company=row.company,
        responsible=row.responsible,
        source=row.source,
        tags=list(row.tags or []),
        notes=row.notes,
        auto_created=bool(row.auto_created),
        created_at=iso(row.created_at),
        updated_at=iso(row.updated_at),
        last_activity_at=iso(row.last_activity_at),
        phones=[PhoneOut(e164=p.e164, raw=p.raw) for p in phone_rows],
        phone_count=int(count),
        emails=list(emails),
    )


_SUMMARY_PHONES = (
    sa.select(client_phones.c.e164, client_phones.c.raw)
    .where(client_phones.c.client_id == sa.bindparam("client_id", type_=sa.Integer))
    .order_by(client_phones.c.id)
    .limit(sa.bindparam("limit", type_=sa.Integer))
)


_LAST_CALL = (
    sa.select(timeline_entries.c.payload, timeline_entries.c.call_id)
    .where(timeline_entries.c.client_id == sa.bindparam("client_id", type_=sa.Integer),
           timeline_entries.c.kind == "call")
    .order_by(timeline_entries.c.at.desc(), timeline_entries.c.id.desc())
    .limit(1)
)
_OPEN_TASKS = (
    sa.select(tasks.c.id, tasks.c.kind, tasks.c.title, tasks.c.due_at, tasks.c.assignee)
    .where(tasks.c.client_id == sa.bindparam("client_id", type_=sa.Integer), tasks.c.status == "open")
    .order_by(tasks.c.due_at.is_(None), tasks.c.due_at, tasks.c.id)
    .limit(5)
)
_LAST_CALL_KEYS = ("direction", "status", "operator", "started_at", "talk_seconds")


def _summary(candidate: Candidate, rows: Sequence[Any], ambiguous: bool, last: Any,
             open_tasks: Sequence[Any]) -> CardSummary:
    return CardSummary(
        id=candidate.id,
        name=candidate.name,
        company=candidate.company,
        responsible=candidate.responsible,
        phones=[PhoneOut(e164=r.e164, raw=r.raw) for r in rows],
        tags=list(candidate.tags),
        ambiguous=ambiguous,
        last_call=None if last is None else {
            "call_id": last.call_id, **{k: (last.payload or {}).get(k) for k in _LAST_CALL_KEYS}},
        open_tasks=[{"id": t.id, "kind": t.kind, "title": t.title, "assignee": t.assignee,
                     "due_at": iso(t.due_at) if t.due_at else None} for t in open_tasks],
    )


async def card_summary(
    db: Db, candidate: Candidate, *, ambiguous: bool = False, phones_limit: int = 10
) -> CardSummary:
    params = {"client_id": candidate.id}
    rows = (await db.execute(_SUMMARY_PHONES, {**params, "limit": phones_limit})).all()
    last = (await db.execute(_LAST_CALL, params)).first()
    open_tasks = (await db.execute(_OPEN_TASKS, params)).all()
    return _summary(candidate, rows, ambiguous, last, open_tasks)


def card_summary_sync(
    conn: sa.engine.Connection, candidate: Candidate, *, ambiguous: bool = False, phones_limit: int = 10
) -> CardSummary:
    params = {"client_id": candidate.id}
    rows = conn.execute(_SUMMARY_PHONES, {**params, "limit": phones_limit}).all()
    last = conn.execute(_LAST_CALL, params).first()
    open_tasks = conn.execute(_OPEN_TASKS, params).all()
    return _summary(candidate, rows, ambiguous, last, open_tasks)


def _looks_like_phone(query: str) -> bool:
    d = phones.digits(query)
    return len(d) >= 1 and len(d) >= len(re.sub(r"[\s()+\-.]", "", query)) - 1


def _dialect(db: Db) -> str:
    if isinstance(db, AsyncSession):
        return db.get_bind().dialect.name
    return db.dialect.name


def encode_cursor(last_activity: datetime, client_id: int) -> str:
    raw = json.dumps([iso(last_activity), client_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, client_id = json.loads(raw)
        when = datetime.fromisoformat(str(at).replace("Z", "+00:00"))
        # An id a database column can hold: 10**26 would be an OverflowError in the driver.
        if (when.tzinfo is None or isinstance(client_id, bool) or not isinstance(client_id, int)
                or not 0 <= client_id < 2**63):
            raise ValueError("bad cursor")
        return when, client_id
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise CardError("cursor", "the cursor is not one this API gave out") from None


@dataclass(frozen=True)
class CardQuery:
    """What the card list shows: everything, or matching `text` (a name, a company, a whole
    number or any 4+ consecutive digits of one), by responsible operator and by source."""

    text: str | None = None
    responsible: str | None = None  # an extension, or "" for cards without one
    source: str | None = None  # an ad channel, or "" for cards without one
    limit: int = 50
    cursor: str | None = None
    # The caller's access rule: a condition on `clients` (an operator's cards), or None.
    visible: Any = None


# A part of a number matching more phones than this is searched with a join instead of a list.
MAX_ID_LIST = 20_000


async def _text_condition(db: Db, text: str, settings: MatchSettings) -> Any:
    if _looks_like_phone(text):
        e164 = phones.normalize(text, settings.region, settings.max_extension_length)
        if e164 is not None:
            suffix = phones.suffix_key(e164, settings.match_digits)
            by_phone = sa.select(client_phones.c.client_id).where(
                sa.or_(client_phones.c.e164 == e164,
                       sa.and_(client_phones.c.e164.is_(None), client_phones.c.suffix == suffix)))
            return clients.c.id.in_(by_phone)
        try:
            patterns = digit_patterns(text, settings.region)
        except PartialNumberError as exc:
            raise CardError("query", str(exc)) from None
        phone_ids = ids_containing(_dialect(db), client_phones, ["e164", "suffix"],
                                   PHONES_FTS_TABLE, patterns)
        matching = sa.select(client_phones.c.client_id).where(phone_ids)
        # The cards first, then their order: as a join, PostgreSQL takes a few thousand matches
        # for a reason to scan every card (61 ms at 300,000 cards instead of 2 ms).
        found = list((await db.execute(matching.distinct().limit(MAX_ID_LIST + 1))).scalars())
        return clients.c.id.in_(found) if len(found) <= MAX_ID_LIST else clients.c.id.in_(matching)
    pattern = "%" + text.casefold().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    return sa.or_(clients.c.name_key.like(pattern, escape="\\"),
                  sa.func.lower(clients.c.company).like(pattern, escape="\\"))


async def find_cards(db: Db, query: CardQuery, settings: MatchSettings) -> tuple[list[Card], str | None]:
    """A page of cards, most recently active first, and the cursor of the next page."""
    conds: list[Any] = []
    text = (query.text or "").strip()
    if text:
        conds.append(await _text_condition(db, text, settings))
    if query.responsible is not None:
        conds.append(clients.c.responsible == query.responsible if query.responsible
                     else clients.c.responsible.is_(None))
    if query.source is not None:
        conds.append(clients.c.source == query.source if query.source else clients.c.source.is_(None))
    if query.visible is not None:
        conds.append(query.visible)
    if query.cursor:
        when, last_id = decode_cursor(query.cursor)
        conds.append(sa.or_(clients.c.last_activity_at < when,
                            sa.and_(clients.c.last_activity_at == when, clients.c.id < last_id)))
    rows = (await db.execute(
        sa.select(clients.c.id, clients.c.last_activity_at).where(*conds)
        .order_by(clients.c.last_activity_at.desc(), clients.c.id.desc()).limit(query.limit + 1)
    )).all()
    page = rows[:query.limit]
    next_cursor = (encode_cursor(page[-1].last_activity_at, page[-1].id)
                   if len(rows) > query.limit else None)
    return await cards_by_ids(db, [r.id for r in page]), next_cursor


async def cards_by_ids(db: Db, ids: Sequence[int], *, phones_limit: int = 20) -> list[Card]:
    """Cards in the order of `ids`, in three queries however many there are."""
    if not ids:
        return []
    rows = {r.id: r for r in (await db.execute(sa.select(clients).where(clients.c.id.in_(ids))))}
    numbers: dict[int, list[PhoneOut]] = {i: [] for i in ids}
    counts: dict[int, int] = dict.fromkeys(ids, 0)
    for p in await db.execute(sa.select(client_phones.c.client_id, client_phones.c.e164, client_phones.c.raw)
                              .where(client_phones.c.client_id.in_(ids)).order_by(client_phones.c.id)):
        counts[p.client_id] += 1
        if len(numbers[p.client_id]) < phones_limit:
            numbers[p.client_id].append(PhoneOut(e164=p.e164, raw=p.raw))
    mails: dict[int, list[str]] = {i: [] for i in ids}
    for e in await db.execute(sa.select(client_emails.c.client_id, client_emails.c.email)
                              .where(client_emails.c.client_id.in_(ids)).order_by(client_emails.c.id)):
        mails[e.client_id].append(e.email)
    return [_card(rows[i], numbers[i], counts[i], mails[i]) for i in ids if i in rows]


def _card(row: Any, phone_list: list[PhoneOut], count: int, emails: list[str]) -> Card:
    return Card(
        id=row.id, name=row.name, company=row.company, responsible=row.responsible, source=row.source,
        tags=list(row.tags or []), notes=row.notes, auto_created=bool(row.auto_created),
        created_at=iso(row.created_at), updated_at=iso(row.updated_at),
        last_activity_at=iso(row.last_activity_at), phones=phone_list, phone_count=count,
        emails=emails)


async def search_cards(db: Db, query: str, settings: MatchSettings, *, limit: int = 50) -> list[Card]:
    """By phone (any format; exact E.164, suffix fallback; or any 4+ consecutive digits) or by a
    part of the name or company."""
    text = (query or "").strip()
    if not text:
        raise CardError("query", "the search text is empty")
    found, _next = await find_cards(db, CardQuery(text=text, limit=limit), settings)
    return found


class PhoneConflict(TypedDict):
    phone: str
    client_id: int
    name: str


async def phone_conflicts(db: Db, client_id: int) -> list[PhoneConflict]:
    """This card's numbers that other cards hold too (the UI offers to merge them)."""
    mine = sa.select(client_phones.c.e164).where(client_phones.c.client_id == client_id,
                                                 client_phones.c.e164.is_not(None))
    rows = await db.execute(
        sa.select(client_phones.c.e164, clients.c.id, clients.c.name)
        .join(clients, clients.c.id == client_phones.c.client_id)
        .where(client_phones.c.e164.in_(mine), client_phones.c.client_id != client_id)
        .order_by(clients.c.last_activity_at.desc(), clients.c.id.desc()).limit(20))
    return [PhoneConflict(phone=r.e164, client_id=r.id, name=r.name) for r in rows]


async def owners_by_e164(db: Db, numbers: Sequence[str]) -> dict[str, int]:
    """For each number, the card holding it (the most recently active when several do)."""
    out: dict[str, int] = {}
    for i in range(0, len(numbers), 900):  # stay far below the drivers' parameter limits
        rows = await db.execute(
            sa.select(client_phones.c.e164, clients.c.id)
            .join(clients, clients.c.id == client_phones.c.client_id)
            .where(client_phones.c.e164.in_(list(numbers[i : i + 900])))
            .order_by(clients.c.last_activity_at.desc(), clients.c.id.desc())
        )
        for e164, client_id in rows:
            out.setdefault(e164, int(client_id))
    return out
