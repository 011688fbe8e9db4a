"""Issue 18 point 3 (and issue 15 point 6): who may do what to which client card, the whole
role x action matrix, through the bridge as `serve` assembles it, on SQLite and PostgreSQL.

admin and crm: everything. manager: every card, `responsible` included; closes no task. operator
101: creates cards; reads and edits cards they are responsible for, cards with no responsible and
cards a call of theirs touched; never changes `responsible` (403); sees only their own calls on a
timeline; closes only their own tasks. Anything else of theirs is "no such client" (404)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from crm_sync.contacts import CallFacts
from crm_sync.timeline import attach_call
from tests.api.conftest import Api
from tests.api.seed import insert_call

ROLES = ("admin", "crm", "manager", "operator")


@dataclass
class Cards:
    own: int  # responsible 101
    free: int  # no responsible
    other: int  # responsible 102, never touched by 101
    touched: int  # responsible 102, but 101 answered a call of it
    call_101: int  # on `touched`: answered by 101
    call_102: int  # on `touched`: answered by 102 (101 must not see it)


async def _card(api: Api, name: str, phone: str, responsible: str | None) -> int:
    resp = await api.client.post("/api/v1/clients", headers=api.auth("crm"),
                                 json={"name": name, "phones": [phone], "responsible": responsible})
    assert resp.status == 201, await resp.text()
    return int((await resp.json())["id"])


async def _call_on(api: Api, client_id: int, operator: str, minutes: float, number: str) -> int:
    async with api.runtime.engine.begin() as conn:
        call_id = await insert_call(conn, minutes=minutes, client_id=client_id, operator=operator,
                                    operators_rung=[operator], customer_number=number,
                                    legs=[{"extension": operator}])
        await attach_call(conn, client_id, CallFacts(
            call_id=call_id, direction="inbound", status="answered", customer_number=number,
            customer_name=None, did=None, operator=operator,
            started_at=datetime(2026, 11, 20, 9, int(minutes), tzinfo=UTC)))
    return call_id


@pytest.fixture
async def cards(api: Api) -> Cards:
    own = await _card(api, "Own", "+79160000001", "101")
    free = await _card(api, "Free", "+79160000002", None)
    other = await _card(api, "Other", "+79160000003", "102")
    touched = await _card(api, "Touched", "+79160000004", "102")
    call_102 = await _call_on(api, touched, "102", 1, "+79160000004")
    call_101 = await _call_on(api, touched, "101", 2, "+79160000004")
    return Cards(own, free, other, touched, call_101, call_102)


def _visible(role: str, cards: Cards) -> set[int]:
    everything = {cards.own, cards.free, cards.other, cards.touched}
    return everything - {cards.other} if role == "operator" else everything


@pytest.mark.parametrize("role", ROLES)
async def test_reading_cards(api: Api, cards: Cards, role: str) -> None:
    listed = await api.client.get("/api/v1/clients", headers=api.auth(role))
    assert listed.status == 200
    assert {c["id"] for c in (await listed.json())["items"]} == _visible(role, cards)
    found = await api.client.get("/api/v1/clients", params={"q": "+79160000003"}, headers=api.auth(role))
    assert [c["id"] for c in (await found.json())["items"]] == ([] if role == "operator" else [cards.other])
    for card in (cards.own, cards.free, cards.other, cards.touched):
        expected = 200 if card in _visible(role, cards) else 404
        for path in (f"/api/v1/clients/{card}", f"/api/v1/clients/{card}/timeline"):
            resp = await api.client.get(path, headers=api.auth(role))
            assert resp.status == expected, (role, path, resp.status)
            if expected == 404:
                assert (await resp.json())["error"] == {"code": "not_found", "message": "no such client"}


@pytest.mark.parametrize("role", ROLES)
async def test_a_timeline_shows_an_operator_only_their_own_calls(api: Api, cards: Cards, role: str) -> None:
    resp = await api.client.get(f"/api/v1/clients/{cards.touched}/timeline", headers=api.auth(role))
    assert resp.status == 200
    calls = {e["call_id"] for e in (await resp.json())["items"] if e["kind"] == "call"}
    assert calls == ({cards.call_101} if role == "operator" else {cards.call_101, cards.call_102})
    text = await resp.text()
    assert ('"operator": "102"' in text) is (role != "operator")


@pytest.mark.parametrize("role", ROLES)
async def test_editing_cards(api: Api, cards: Cards, role: str) -> None:
    for card in (cards.own, cards.free, cards.other, cards.touched):
        visible = card in _visible(role, cards)
        resp = await api.client.patch(f"/api/v1/clients/{card}", headers=api.auth(role),
                                      json={"company": f"by {role}"})
        assert resp.status == (200 if visible else 404), (role, card, resp.status)
        note = await api.client.post(f"/api/v1/clients/{card}/notes", headers=api.auth(role),
                                     json={"text": "called"})
        assert note.status == (201 if visible else 404), (role, card, note.status)
        task = await api.client.post("/api/v1/tasks", headers=api.auth(role),
                                     json={"client_id": card, "title": "call back"})
        assert task.status == (201 if visible else 404), (role, card, task.status)
    resp = await api.client.get(f"/api/v1/clients/{cards.other}", headers=api.auth("crm"))
    assert (await resp.json())["company"] == (None if role == "operator" else f"by {role}")


@pytest.mark.parametrize("role", ROLES)
async def test_only_crm_manager_and_admin_change_responsible(api: Api, cards: Cards, role: str) -> None:
    for card, before in ((cards.own, "101"), (cards.free, None), (cards.touched, "102")):
        # Sending the field back unchanged (as the web UI does) is no change.
        same = await api.client.patch(f"/api/v1/clients/{card}", headers=api.auth(role),
                                      json={"responsible": before or "", "name": "Same"})
        assert same.status == 200, (role, card, await same.text())
        for wanted in ("101", "103", ""):
            if wanted == (before or ""):
                continue
            resp = await api.client.patch(f"/api/v1/clients/{card}", headers=api.auth(role),
                                          json={"responsible": wanted})
            if role == "operator":
                assert resp.status == 403, (card, wanted, resp.status)
                error = (await resp.json())["error"]
                assert error["code"] == "forbidden_responsible" and "responsible" in error["message"]
            else:
                assert resp.status == 200 and (await resp.json())["responsible"] == (wanted or None)
                await api.client.patch(f"/api/v1/clients/{card}", headers=api.auth("crm"),
                                       json={"responsible": before or ""})
    # The issue's hijack: 102's customer routed to the operator who edited the card.
    if role == "operator":
        routed = await api.client.get("/api/v1/routing/responsible", params={"number": "+79160000004"},
                                      headers=api.auth("crm"))
        assert await routed.text() == "102"
        assert (await api.client.get("/api/v1/routing/responsible", params={"number": "+79160000004"},
                                     headers=api.auth("operator"))).status == 403


@pytest.mark.parametrize("role", ROLES)
async def test_creating_cards(api: Api, role: str) -> None:
    mine = await api.client.post("/api/v1/clients", headers=api.auth(role),
                                 json={"name": "Caller", "phones": ["+79160000009"]})
    assert mine.status == 201
    own = await api.client.post("/api/v1/clients", headers=api.auth(role),
                                json={"name": "Caller 2", "phones": ["+79160000010"], "responsible": "101"})
    assert own.status == 201  # the operator 101 may name themselves (the web UI's default)
    other = await api.client.post("/api/v1/clients", headers=api.auth(role),
                                  json={"name": "Caller 3", "phones": ["+79160000011"], "responsible": "102"})
    assert other.status == (403 if role == "operator" else 201)


@pytest.mark.parametrize("role", ROLES)
async def test_merging(api: Api, cards: Cards, role: str) -> None:
    # Merging 102's card into one's own would move 102's customer (and its routing) to oneself.
    resp = await api.client.post(f"/api/v1/clients/{cards.own}/merge", headers=api.auth(role),
                                 json={"from_id": cards.touched})
    assert resp.status == (403 if role == "operator" else 200), (role, resp.status)
    resp = await api.client.post(f"/api/v1/clients/{cards.own}/merge", headers=api.auth(role),
                                 json={"from_id": cards.other})
    assert resp.status == (404 if role == "operator" else 200), (role, resp.status)
    if role == "operator":
        merged = await api.client.post(f"/api/v1/clients/{cards.own}/merge", headers=api.auth(role),
                                       json={"from_id": cards.free})
        assert merged.status == 200


async def _task(api: Api, client_id: int, assignee: str | None) -> int:
    body: dict[str, Any] = {"client_id": client_id, "title": f"for {assignee}"}
    if assignee:
        body["assignee"] = assignee
    resp = await api.client.post("/api/v1/tasks", headers=api.auth("crm"), json=body)
    assert resp.status == 201
    return int((await resp.json())["id"])


@pytest.mark.parametrize("role", ROLES)
async def test_closing_tasks(api: Api, cards: Cards, role: str) -> None:
    theirs = await _task(api, cards.own, "101")
    others = await _task(api, cards.other, "102")
    for task_id, assignee in ((theirs, "101"), (others, "102")):
        resp = await api.client.post(f"/api/v1/tasks/{task_id}/close", headers=api.auth(role))
        if role == "manager":
            assert resp.status == 403
            assert (await resp.json())["error"]["code"] == "forbidden"
        elif role == "operator":
            assert resp.status == (200 if assignee == "101" else 404), (task_id, resp.status)
        else:
            assert resp.status == 200 and (await resp.json())["status"] == "closed"
