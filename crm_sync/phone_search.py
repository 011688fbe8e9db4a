"""Search by part of a number: any 4 or more consecutive digits, indexed.

PostgreSQL: `LIKE '%digits%'` served by a pg_trgm GIN index on the column. SQLite: an
external-content FTS5 table with the trigram tokenizer over the column (kept in sync by triggers,
created by the migration), queried with the digits as a phrase: consecutive trigrams are exactly
the substring. A query of 6+ digits that starts with the region's trunk prefix (8 in Russia:
"8 916 12...") is also tried with the country code instead ("7916 12..."), as stored numbers are
E.164.
"""

from __future__ import annotations

import re
from typing import Any

import phonenumbers
import sqlalchemy as sa

from crm_sync.phones import digits

MIN_DIGITS = 4
MAX_DIGITS = 20
TRUNK_MIN_DIGITS = 6
_ONLY_DIGITS = re.compile(r"^[0-9]+$")


class PartialNumberError(ValueError):
    """Too few (or too many) digits to search by."""


def digit_patterns(text: str, region: str) -> list[str]:
    """The digit strings a partial number stands for (PartialNumberError if it cannot be one)."""
    found = digits(text)
    if len(found) < MIN_DIGITS:
        raise PartialNumberError(f"at least {MIN_DIGITS} digits are needed to search by number")
    if len(found) > MAX_DIGITS:
        raise PartialNumberError(f"a number has at most {MAX_DIGITS} digits")
    out = [found]
    if not text.strip().startswith("+"):
        meta = phonenumbers.PhoneMetadata.metadata_for_region(region)
        prefix = meta.national_prefix if meta is not None else None
        code = str(meta.country_code) if meta is not None else ""
        # Only when it looks like the start of a number written nationally (6+ digits:
        # "8 916 31"): four digits that happen to begin with 8 are just digits, and "8959" read
        # as "7959" would match every +7 959 number.
        if prefix and code != prefix and found.startswith(prefix) and len(found) >= TRUNK_MIN_DIGITS:
            out.append(code + found[len(prefix):])
    return out


def fts_query(patterns: list[str]) -> str:
    """The FTS5 expression: each pattern a quoted phrase (digits only, so nothing to escape)."""
    if not patterns or not all(_ONLY_DIGITS.match(p) for p in patterns):
        raise PartialNumberError("a partial number is digits only")
    return " OR ".join(f'"{p}"' for p in patterns)


def ids_containing(dialect: str, table: sa.Table, columns: list[str], fts_table: str,
                   patterns: list[str]) -> Any:
    """A condition on `table.c.id`: one of `columns` holds one of the digit strings. Columns after
    the first are fallbacks, searched only where the first is empty (client_phones.suffix holds
    the digits of a number kept as typed; for the others, e164 already has them)."""
    if dialect == "postgresql":
        first, rest = columns[0], columns[1:]
        conds: list[Any] = [table.c[first].like(f"%{p}%") for p in patterns]
        conds += [sa.and_(table.c[first].is_(None), table.c[column].like(f"%{p}%"))
                  for column in rest for p in patterns]
        return sa.or_(*conds)
    # Inlined, not bound: fts_query() let through digits and quotes only, and a literal keeps two
    # such conditions in one statement from fighting over a parameter name.
    match: Any = sa.select(sa.column("rowid")).select_from(sa.table(fts_table)).where(
        sa.text(f"{fts_table} MATCH '{fts_query(patterns)}'"))
    return table.c.id.in_(match)
