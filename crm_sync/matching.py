"""Who is calling: a caller's number to its client card, in one indexed query.

Exact match on the E.164 form first; stored numbers that did not parse (e164 NULL) are matched on
their last N digits. Several cards: the most recently active one wins and the match is flagged
ambiguous. Internal extensions never match.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from crm_sync import phones
from crm_sync.schema import Db, client_phones, clients

# How many candidates are read to tell "ambiguous" and list the alternatives.
MAX_CANDIDATES = 10


@dataclass(frozen=True)
class MatchSettings:
    region: str = "RU"
    match_digits: int = 10
    max_extension_length: int = 5


@dataclass(frozen=True)
class Candidate:
    id: int
    name: str
    company: str | None
    responsible: str | None
    tags: list[str]
    last_activity_at: datetime


@dataclass(frozen=True)
class Match:
    e164: str | None  # the caller's number normalized (None when it did not parse)
    client: Candidate | None  # the chosen card
    ambiguous: bool = False
    candidate_ids: tuple[int, ...] = field(default=())

    @property
    def client_id(self) -> int | None:
        return None if self.client is None else self.client.id


@dataclass(frozen=True)
class LookupKeys:
    e164: str | None
    suffix: str | None


def lookup_keys(number: str | None, settings: MatchSettings) -> LookupKeys | None:
    """The keys to look a caller up by; None for extensions, anonymous and junk."""
    if not number or phones.is_extension(number, settings.max_extension_length):
        return None
    if len(phones.digits(number)) <= settings.max_extension_length:
        return None
    e164 = phones.normalize(number, settings.region, settings.max_extension_length)
    suffix = phones.suffix_key(e164 or number, settings.match_digits)
    if e164 is None and suffix is None:
        return None
    return LookupKeys(e164, suffix)


def _candidates(ids: Any) -> sa.Select[Any]:
    return (
        sa.select(
            clients.c.id,
            clients.c.name,
            clients.c.company,
            clients.c.responsible,
            clients.c.tags,
            clients.c.last_activity_at,
        )
        .where(clients.c.id.in_(ids))
        .order_by(clients.c.last_activity_at.desc(), clients.c.id.desc())
        .limit(sa.bindparam("limit", type_=sa.Integer))
    )


# Built once with bound parameters: constructing a statement per call costs more than running it.
# A caller whose number parsed: exact E.164, plus stored numbers that did not parse, by suffix.
_BY_E164 = _candidates(
    sa.union(
        sa.select(client_phones.c.client_id).where(
            client_phones.c.e164 == sa.bindparam("e164", type_=sa.String)
        ),
        sa.select(client_phones.c.client_id).where(
            client_phones.c.suffix == sa.bindparam("suffix", type_=sa.String), client_phones.c.e164.is_(None)
        ),
    )
)
# A caller whose number did not parse: any stored number with the same last digits.
_BY_SUFFIX = _candidates(
    sa.select(client_phones.c.client_id).where(
        client_phones.c.suffix == sa.bindparam("suffix", type_=sa.String)
    )
)


def match_statement(
    keys: LookupKeys, limit: int = MAX_CANDIDATES + 1
) -> tuple[sa.Select[Any], dict[str, Any]]:
    """The lookup and its parameters: candidate cards, most recently active first; each branch
    uses one index (e164 or suffix)."""
    if keys.e164 is not None:
        return _BY_E164, {"e164": keys.e164, "suffix": keys.suffix, "limit": limit}
    return _BY_SUFFIX, {"suffix": keys.suffix, "limit": limit}


def match_from_rows(keys: LookupKeys, rows: Sequence[Any]) -> Match:
    if not rows:
        return Match(e164=keys.e164, client=None)
    candidates = [
        Candidate(
            id=r.id,
            name=r.name,
            company=r.company,
            responsible=r.responsible,
            tags=list(r.tags or []),
            last_activity_at=r.last_activity_at,
        )
        for r in rows[:MAX_CANDIDATES]
    ]
    return Match(
        e164=keys.e164,
        client=candidates[0],
        ambiguous=len(rows) > 1,
        candidate_ids=tuple(c.id for c in candidates),
    )


async def match_number(db: Db, number: str | None, settings: MatchSettings) -> Match:
    keys = lookup_keys(number, settings)
    if keys is None:
        return Match(e164=None, client=None)
    statement, params = match_statement(keys)
    return match_from_rows(keys, (await db.execute(statement, params)).all())


def match_number_sync(conn: sa.engine.Connection, number: str | None, settings: MatchSettings) -> Match:
    """The same lookup on a synchronous connection: for SQLite, a point read on an index is
    cheaper done in place than handed to a driver thread and back."""
    keys = lookup_keys(number, settings)
    if keys is None:
        return Match(e164=None, client=None)
    statement, params = match_statement(keys)
    return match_from_rows(keys, conn.execute(statement, params).all())
