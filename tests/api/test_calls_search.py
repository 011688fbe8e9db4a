"""`q=` on GET /api/v1/calls: full-text search in transcripts (FTS5 / tsvector), with the match."""

from __future__ import annotations

from recordings.transcription.analytics import TermLists, analyse
from recordings.transcription.dialog import build_turns, plain_text
from recordings.transcription.pipeline import TranscriptResult
from recordings.transcription.recognize import Word
from recordings.transcription.store import save_transcript
from tests.api.conftest import Api
from tests.api.seed import insert_call


def _said(start: float, text: str) -> list[Word]:
    return [Word(w, start + i * 0.5, start + i * 0.5 + 0.4, 1.0) for i, w in enumerate(text.split())]


def _transcript(operator: str, customer: str) -> TranscriptResult:
    turns = build_turns({"operator": _said(0, operator), "customer": _said(3, customer)})
    return TranscriptResult(tuple(turns), plain_text(turns),
                            analyse(turns, 30.0, ("operator", "customer"), TermLists()),
                            30.0, ("operator", "customer"), "ru", "test-model")


async def test_search_narrows_the_journal_and_carries_the_match(api: Api) -> None:
    async with api.runtime.engine.begin() as conn:
        refund = await insert_call(conn, minutes=1, operator="101", operators_rung=["101"])
        other = await insert_call(conn, minutes=2, operator="102", operators_rung=["102"])
        await insert_call(conn, minutes=3)  # no transcript at all
        await save_transcript(conn, refund, None, _transcript("компания Ромашка слушаю", "верните деньги"))
        await save_transcript(conn, other, None, _transcript("добрый день", "хочу купить"))
    resp = await api.client.get("/api/v1/calls", params={"q": "деньги"}, headers=api.auth("manager"))
    assert resp.status == 200
    items = (await resp.json())["items"]
    assert [i["id"] for i in items] == [refund]
    assert items[0]["match"] == {"snippet": "верните [деньги]", "speaker": "customer", "offset": 3.5}
    # Combined with the other filters, and the operator's own-calls rule.
    resp = await api.client.get("/api/v1/calls", params={"q": "деньги"}, headers=api.auth("operator102"))
    assert (await resp.json())["items"] == []
    resp = await api.client.get("/api/v1/calls", params={"q": "нет такого"}, headers=api.auth("crm"))
    assert (await resp.json())["items"] == []
    # Without q, no match objects.
    resp = await api.client.get("/api/v1/calls", headers=api.auth("manager"))
    assert all("match" not in i for i in (await resp.json())["items"])


async def test_search_bad_queries_are_clean_errors(api: Api) -> None:
    resp = await api.client.get("/api/v1/calls", params={"q": "-только"}, headers=api.auth("manager"))
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_search"
    resp = await api.client.get("/api/v1/calls", params={"q": "x" * 501}, headers=api.auth("manager"))
    assert resp.status == 422
    for hostile in ('"', "AND OR NOT", "a*b:c^", "); DROP TABLE calls; --"):
        resp = await api.client.get("/api/v1/calls", params={"q": hostile}, headers=api.auth("manager"))
        assert resp.status in (200, 400), (hostile, resp.status)
