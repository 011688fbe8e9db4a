"""Full-text search over stored transcripts on SQLite (FTS5) and PostgreSQL (tsvector + GIN)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from recordings.transcription.analytics import TermLists, analyse
from recordings.transcription.dialog import build_turns, plain_text
from recordings.transcription.pipeline import TranscriptResult
from recordings.transcription.recognize import Word
from recordings.transcription.search import SearchQueryError, fts5_expression, search_call_ids
from recordings.transcription.store import load_transcript, save_transcript


def said(start: float, text: str) -> list[Word]:
    return [Word(word, start + i * 0.5, start + i * 0.5 + 0.4, 1.0) for i, word in enumerate(text.split())]


def result(operator: list[Word], customer: list[Word]) -> TranscriptResult:
    turns = build_turns({"operator": operator, "customer": customer})
    return TranscriptResult(tuple(turns), plain_text(turns),
                            analyse(turns, 60.0, ("operator", "customer"), TermLists()),
                            60.0, ("operator", "customer"), "ru", "test-model")


CALLS = {
    1: result(said(0, "Здравствуйте компания Ромашка"), said(3, "хочу вернуть заказ номер пять")),
    2: result(said(0, "Добрый день слушаю вас"), said(4, "у вас дешевле чем у конкурента")),
    3: result(said(0, "Ромашка добрый день"), said(2, "заказ не пришёл") + said(20, "верните деньги")),
}


@pytest.fixture
async def stored(engine: AsyncEngine) -> AsyncEngine:
    async with engine.begin() as conn:
        for call_id, res in CALLS.items():
            await save_transcript(conn, call_id, None, res)
    return engine


async def search(engine: AsyncEngine, q: str, **kw: object) -> list[tuple[int, str | None, float | None]]:
    async with engine.connect() as conn:
        hits = await search_call_ids(conn, q, **kw)  # type: ignore[arg-type]
    return [(h.call_id, h.speaker, h.offset) for h in hits]


async def test_word_search_finds_calls_with_speaker_and_offset(stored: AsyncEngine) -> None:
    assert sorted(await search(stored, "заказ")) == [(1, "customer", 4.0), (3, "customer", 2.0)]
    assert await search(stored, "ДЕНЬГИ") == [(3, "customer", 20.5)]
    assert sorted(await search(stored, "ромашка")) == [(1, "operator", 1.0), (3, "operator", 0.0)]
    assert await search(stored, "нет такого слова") == []


async def test_snippet_marks_the_match(stored: AsyncEngine) -> None:
    async with stored.connect() as conn:
        (hit,) = await search_call_ids(conn, "конкурента")
    assert hit.call_id == 2 and hit.snippet == "у вас дешевле чем у [конкурента]"
    assert hit.offset == pytest.approx(6.5)
    assert hit.to_dict()["speaker"] == "customer"


async def test_phrases_or_and_exclusion(stored: AsyncEngine) -> None:
    assert await search(stored, '"вернуть заказ"') == [(1, "customer", 3.5)]  # where the phrase starts
    assert await search(stored, '"заказ вернуть"') == []
    assert sorted(c for c, _, _ in await search(stored, "деньги or конкурента")) == [2, 3]
    assert [c for c, _, _ in await search(stored, "заказ -деньги")] == [1]
    assert [c for c, _, _ in await search(stored, "добрый день")] in ([2, 3], [3, 2])
    assert [c for c, _, _ in await search(stored, "заказ", call_ids=[3, 2])] == [3]
    assert await search(stored, "заказ", call_ids=[]) == []
    assert len(await search(stored, "день", limit=1)) == 1


async def test_hostile_or_empty_queries(stored: AsyncEngine) -> None:
    # FTS5 operators and quotes in user input are words, never syntax errors.
    assert await search(stored, 'NEAR( "unbalanced * ^ AND') == []
    assert await search(stored, "заказ*") != []  # punctuation around a word is ignored
    for empty in ("", "   ", "-заказ", '""', "or"):
        with pytest.raises(SearchQueryError):
            await search(stored, empty)


async def test_replacing_a_transcript_updates_the_index(stored: AsyncEngine) -> None:
    async with stored.begin() as conn:
        await save_transcript(conn, 1, None, result(said(0, "совсем другой разговор"), []))
    assert await search(stored, "заказ") == [(3, "customer", 2.0)]
    assert await search(stored, "разговор") == [(1, "operator", 1.0)]
    async with stored.connect() as conn:
        loaded = await load_transcript(conn, 1)
        count = (await conn.execute(sa.text("SELECT count(*) FROM transcripts"))).scalar()
    assert loaded is not None and loaded.plain_text == "совсем другой разговор" and count == 3


def test_fts5_translation() -> None:
    assert fts5_expression('a "b c" -d or e') == '(("a" AND "b c") NOT "d") OR ("e")'
