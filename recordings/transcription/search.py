"""Full-text search over transcripts: which calls said it, the words around it, and when.

Query syntax is web-search style on both databases: words (all must occur), "a phrase",
`or` between alternatives, `-word` to exclude. PostgreSQL parses it itself with
`websearch_to_tsquery('simple', ...)` against the GIN-indexed tsvector column; for SQLite FTS5 the
same query is translated here into an FTS5 expression in which every word is quoted, so user
input can never be an FTS5 syntax error.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from recordings.transcription.dialog import Turn

_START, _STOP = "\x02", "\x03"  # highlight markers; never in recognised text
_TOKEN = re.compile(r'(-?)"([^"]*)"?|(\S+)')
_WORD = re.compile(r"\w+")
SNIPPET_CONTEXT_WORDS = 6


class SearchQueryError(ValueError):
    """The query has nothing to look for (empty, or only exclusions)."""


@dataclass(frozen=True)
class SearchHit:
    call_id: int
    # The matching turn's words around the match, matched words in [brackets].
    snippet: str
    speaker: str | None
    # Seconds from the start of the recording to the first matched word.
    offset: float | None
    rank: float

    def to_dict(self) -> dict[str, Any]:
        return {"call_id": self.call_id, "snippet": self.snippet, "speaker": self.speaker,
                "offset": self.offset, "rank": self.rank}


Phrase = tuple[str, ...]


@dataclass(frozen=True)
class _AndGroup:
    include: tuple[Phrase, ...]
    exclude: tuple[Phrase, ...]


def parse_query(text: str) -> list[_AndGroup]:
    """Alternatives (split at `or`) of words/phrases that must all occur, minus exclusions."""
    groups: list[_AndGroup] = []
    include: list[Phrase] = []
    exclude: list[Phrase] = []
    for match in _TOKEN.finditer(text):
        negate, quoted, bare = match.group(1), match.group(2), match.group(3)
        if bare is not None and bare.lower() == "or":
            if include:
                groups.append(_AndGroup(tuple(include), tuple(exclude)))
            include, exclude = [], []
            continue
        if bare is not None and bare.startswith("-") and len(bare) > 1:
            negate, bare = "-", bare[1:]
        words = tuple(w.casefold() for w in _WORD.findall(quoted if quoted is not None else bare))
        if words:
            (exclude if negate else include).append(words)
    if include:
        groups.append(_AndGroup(tuple(include), tuple(exclude)))
    if not groups:
        raise SearchQueryError("the search has no words to look for")
    return groups


def fts5_expression(text: str) -> str:
    def phrase(words: Phrase) -> str:
        return '"' + " ".join(words) + '"'  # \w+ words never contain a double quote

    alternatives = []
    for group in parse_query(text):
        expr = " AND ".join(phrase(p) for p in group.include)
        for p in group.exclude:
            expr = f"({expr}) NOT {phrase(p)}"
        alternatives.append(f"({expr})")
    return " OR ".join(alternatives)


async def search_call_ids(conn: AsyncConnection, q: str, limit: int = 20,
                          call_ids: Sequence[int] | None = None) -> list[SearchHit]:
    """Calls whose transcript matches `q`, best first, each with its snippet and time offset.
    `call_ids` restricts the search (e.g. to calls another filter selected)."""
    parse_query(q)  # the same refusal of empty queries on both databases
    only = ""
    params: dict[str, Any] = {"limit": limit}
    if call_ids is not None:
        if not call_ids:
            return []
        only = "AND t.call_id IN :ids"
        params["ids"] = list(call_ids)
    if conn.dialect.name == "postgresql":
        statement = sa.text(
            "SELECT t.call_id, t.turns, ts_headline('simple', t.plain_text, query, "
            f"'HighlightAll=true, StartSel={_START}, StopSel={_STOP}') AS marked, "
            "ts_rank(t.search_vector, query) AS rank "
            "FROM transcripts t, websearch_to_tsquery('simple', :q) AS query "
            f"WHERE t.search_vector @@ query {only} ORDER BY rank DESC, t.call_id DESC LIMIT :limit")
        params["q"] = q
    else:
        statement = sa.text(
            f"SELECT t.call_id, t.turns, highlight(transcripts_fts, 0, '{_START}', '{_STOP}') AS marked, "
            "-bm25(transcripts_fts) AS rank "
            "FROM transcripts_fts JOIN transcripts t ON t.id = transcripts_fts.rowid "
            f"WHERE transcripts_fts MATCH :q {only} ORDER BY rank DESC, t.call_id DESC LIMIT :limit")
        params["q"] = fts5_expression(q)
    if "ids" in params:
        statement = statement.bindparams(sa.bindparam("ids", expanding=True))
    rows = (await conn.execute(statement.columns(turns=sa.JSON), params)).all()
    return [_hit(int(r.call_id), r.turns, r.marked, float(r.rank)) for r in rows]


def _hit(call_id: int, turns_json: Any, marked: str, rank: float) -> SearchHit:
    """Locate the first highlighted word in the turns: its turn gives speaker, snippet, offset."""
    matched = {w.casefold() for m in re.findall(f"{_START}(.*?){_STOP}", marked, re.S)
               for w in _WORD.findall(m)}
    turns = [Turn.from_dict(t) for t in (turns_json or [])]
    for turn in turns:
        for index, word in enumerate(turn.words):
            if word.word.casefold() in matched:
                return SearchHit(call_id, _snippet(turn, index, matched), turn.speaker, word.start, rank)
    # Not located in the words (should not happen): fall back to the database's highlight.
    plain = marked.replace(_START, "[").replace(_STOP, "]")
    return SearchHit(call_id, plain[:200], None, None, rank)


def _snippet(turn: Turn, index: int, matched: set[str]) -> str:
    first = max(0, index - SNIPPET_CONTEXT_WORDS)
    last = min(len(turn.words), index + SNIPPET_CONTEXT_WORDS + 1)
    words = [f"[{w.word}]" if w.word.casefold() in matched else w.word for w in turn.words[first:last]]
    return ("… " if first > 0 else "") + " ".join(words) + (" …" if last < len(turn.words) else "")
