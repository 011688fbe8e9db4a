"""Issue 14 over HTTP, on SQLite and PostgreSQL: search by any 4+ digits of a number (journal and
cards), the journal export (CSV for Excel, XLSX), the card list, notes, hand-made tasks, merging,
tasks that reach the operators a missed call rang, and the screen-pop rules of call.ringing."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import openpyxl
import sqlalchemy as sa

from crm_sync import cards as crm_cards
from crm_sync import tasks as crm_tasks
from crm_sync.timeline import attach_call, list_timeline
from pbx_bridge.ami.events import AmiEvent
from pbx_bridge.calls.changes import CallChange
from pbx_bridge.calls.http import XLSX_WRITERS
from pbx_bridge.calls.tracker import CallTracker
from pbx_bridge.clients.hook import CrmHook, call_facts
from pbx_bridge.crm_connectors.options import match_settings
from pbx_bridge.db.schema import calls
from tests.api.conftest import Api
from tests.api.seed import insert_call
from tests.conftest import TRACES
from tests.tracker_support import load_items, settings_for


async def _get(api: Api, path: str, role: str = "manager", **params: Any) -> tuple[int, Any]:
    resp = await api.client.get(path, params=params, headers=api.auth(role))
    return resp.status, await resp.json()


async def _post(api: Api, path: str, body: Any, role: str = "crm") -> tuple[int, Any]:
    resp = await api.client.post(path, json=body, headers=api.auth(role))
    return resp.status, await resp.json()


async def test_partial_number_search_in_the_journal_and_cards(api: Api) -> None:
    async with api.runtime.engine.begin() as conn:
        ids = {n: await insert_call(conn, minutes=i, customer_number=n)
               for i, n in enumerate(["+79163168454", "+79163168000", "+74951112233", "+79991234567"])}
        match = match_settings(api.runtime.settings)
        now = datetime.now(UTC)
        olga = await crm_cards.create_card(conn, crm_cards.CardInput(name="Ольга", phones=["+74957771122"]),
                                           match, now)
        ivan = await crm_cards.create_card(conn, crm_cards.CardInput(name="Иван", phones=["+79163168454"]),
                                           match, now)
    # The example: 3168454 was a 422 in English; now the one call with those digits.
    for q, expected in (("3168454", {"+79163168454"}), ("3168", {"+79163168454", "+79163168000"}),
                        ("8 916 316", {"+79163168454", "+79163168000"}),  # trunk prefix: +7 916 316
                        ("495 111", {"+74951112233"}), ("+7 (916) 316-84-54", {"+79163168454"})):
        status, page = await _get(api, "/api/v1/calls", number=q)
        assert status == 200, page
        assert {c["customer_number"] for c in page["items"]} == expected, q
        assert {c["id"] for c in page["items"]} == {ids[n] for n in expected}
    status, body = await _get(api, "/api/v1/calls", number="316")
    assert status == 422 and body["error"]["code"] == "number_too_short"
    for q, expected in (("7771", [olga]), ("316 84", [ivan]), ("8 495 777", [olga]), ("9999", [])):
        status, page = await _get(api, "/api/v1/clients", q=q)
        assert status == 200 and [c["id"] for c in page["items"]] == expected, q
    # An operator searching by digits still sees only their own calls.
    async with api.runtime.engine.begin() as conn:
        await conn.execute(sa.update(calls).where(calls.c.id == ids["+79163168000"]).values(operator="102"))
        await conn.execute(sa.update(calls).where(calls.c.id == ids["+79163168000"]).values(
            operators_rung=["102"]))
    status, page = await _get(api, "/api/v1/calls", role="operator", number="3168")
    assert status == 200 and ids["+79163168000"] not in {c["id"] for c in page["items"]}


async def test_operator_filter_answered_by_or_rang(api: Api) -> None:
    async with api.runtime.engine.begin() as conn:
        rang_101_answered_103 = await insert_call(conn, minutes=1, operator="103",
                                                  operators_rung=["101", "103"],
                                                  legs=[{"extension": "101"}, {"extension": "103"}])
        answered_101 = await insert_call(conn, minutes=2, operator="101", legs=[{"extension": "101"}])
    _, page = await _get(api, "/api/v1/calls", operator="101", operator_role="answered")
    assert [c["id"] for c in page["items"]] == [answered_101]
    _, page = await _get(api, "/api/v1/calls", operator="101", operator_role="rang")
    assert {c["id"] for c in page["items"]} == {answered_101, rang_101_answered_103}
    status, _body = await _get(api, "/api/v1/calls", operator="101", operator_role="heard")
    assert status == 422


async def test_export_csv_for_excel_and_xlsx(api: Api, tmp_path: Path) -> None:
    async with api.runtime.engine.begin() as conn:
        for i in range(30):
            name = "=HYPERLINK(1)" if i == 0 else f"Клиент {i}"
            await insert_call(conn, minutes=i, customer_number=f"+7916000{i:04d}", customer_name=name,
                              status="answered" if i % 3 else "no_answer")
    resp = await api.client.get("/api/v1/calls/export", params={"format": "csv", "lang": "ru"},
                                headers=api.auth("manager"))
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/csv")
    raw = await resp.read()
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig")), delimiter=";"))
    assert rows[0] == ["№ звонка", "Начало", "Направление", "Статус", "Номер клиента", "Имя", "Номер линии",
                       "Рекламный канал", "Ответил", "Звонил у", "Ожидание, с", "Разговор, с"]
    assert len(rows) == 31
    by_name = {r[5]: r for r in rows[1:]}
    assert "'=HYPERLINK(1)" in by_name  # a formula is text, not run
    assert by_name["'=HYPERLINK(1)"][3] == "Пропущен: нет ответа"
    assert all(r[4].startswith("'+7916000") for r in rows[1:])
    assert rows[1][10] == "5,0"  # decimal comma for a Russian Excel
    resp = await api.client.get("/api/v1/calls/export", headers=api.auth("manager"),
                                params={"format": "xlsx", "lang": "en", "missed": "true"})
    assert resp.status == 200
    path = tmp_path / "calls.xlsx"
    path.write_bytes(await resp.read())
    book = await asyncio.to_thread(openpyxl.load_workbook, path, read_only=True)
    values = list(book.active.iter_rows(values_only=True))
    assert values[0][:4] == ("Call no.", "Started", "Direction", "Status")
    assert len(values) == 11 and {v[3] for v in values[1:]} == {"Missed: no answer"}
    assert any(v[5] == "=HYPERLINK(1)" for v in values[1:])  # a string cell, never a formula
    api.runtime.settings.api.export_max_rows = 10
    status, body = await _get(api, "/api/v1/calls/export", format="csv")
    assert status == 422 and body["error"]["code"] == "export_too_large"
    status, body = await _get(api, "/api/v1/calls/export", format="pdf")
    assert status == 422


async def test_xlsx_exports_beyond_the_writer_limit_wait_their_turn(api: Api, tmp_path: Path) -> None:
    """api.export_xlsx_writers (2 by default) XLSX exports are written at once; one more waits
    for a slot rather than starting another writer process."""
    async with api.runtime.engine.begin() as conn:
        for i in range(5):
            await insert_call(conn, minutes=i, customer_number=f"+7916000{i:04d}")
    slots = api.client.app[XLSX_WRITERS]
    for _ in range(api.runtime.settings.api.export_xlsx_writers):
        await slots.acquire()

    async def export() -> tuple[int, bytes]:
        async with api.client.get("/api/v1/calls/export", params={"format": "xlsx"},
                                  headers=api.auth("manager")) as resp:
            return resp.status, await resp.read()

    waiting = asyncio.create_task(export())
    await asyncio.sleep(1.0)
    assert not waiting.done()  # every slot is taken: it waits
    slots.release()
    status, body = await asyncio.wait_for(waiting, 30)
    for _ in range(api.runtime.settings.api.export_xlsx_writers - 1):
        slots.release()
    assert status == 200
    (tmp_path / "calls.xlsx").write_bytes(body)
    book = await asyncio.to_thread(openpyxl.load_workbook, tmp_path / "calls.xlsx", read_only=True)
    assert len(list(book.active.iter_rows(values_only=True))) == 6


async def test_card_list_notes_tasks_and_merge(api: Api) -> None:
    match = match_settings(api.runtime.settings)
    now = datetime.now(UTC)
    async with api.runtime.engine.begin() as conn:
        a = await crm_cards.create_card(conn, crm_cards.CardInput(name="A", phones=["+74951110001"],
                                                                  responsible="101", source="Сайт"), match,
                                        now - timedelta(days=3))
        b = await crm_cards.create_card(conn, crm_cards.CardInput(name="B", phones=["+74951110002"]), match,
                                        now - timedelta(days=2))
        c = await crm_cards.create_card(conn, crm_cards.CardInput(name="C", phones=["+74951110003"],
                                                                  responsible="102"), match,
                                        now - timedelta(days=1))
        call_a = await insert_call(conn, customer_number="+74951110001", client_id=a)
        call_c = await insert_call(conn, minutes=5, customer_number="+74951110003", client_id=c)
        for card_id, call_id in ((a, call_a), (c, call_c)):
            row = (await conn.execute(sa.select(calls).where(calls.c.id == call_id))).one()
            from pbx_bridge.calls.query import record_from_row

            await attach_call(conn, card_id, call_facts(record_from_row(row)))
    # The list: most recently active first, pages, filters.
    _, page = await _get(api, "/api/v1/clients", limit="2")
    assert [x["id"] for x in page["items"]] == [c, b] and page["next_cursor"]
    _, rest = await _get(api, "/api/v1/clients", limit="2", cursor=page["next_cursor"])
    assert [x["id"] for x in rest["items"]] == [a] and rest["next_cursor"] is None
    _, page = await _get(api, "/api/v1/clients", responsible="101")
    assert [x["id"] for x in page["items"]] == [a]
    _, page = await _get(api, "/api/v1/clients", responsible="")
    assert [x["id"] for x in page["items"]] == [b]
    _, page = await _get(api, "/api/v1/clients", source="Сайт")
    assert [x["id"] for x in page["items"]] == [a]
    # A note and a hand-made task.
    status, note = await _post(api, f"/api/v1/clients/{a}/notes", {"text": "Перезвонить после обеда"},
                               "manager")
    assert status == 201 and note["payload"]["text"] == "Перезвонить после обеда"
    for bad in ({"text": "  "}, {"text": 5}, {"txt": "x"}):
        status, body = await _post(api, f"/api/v1/clients/{a}/notes", bad, "manager")
        assert status == 422, bad
    status, _ = await _post(api, "/api/v1/clients/9999/notes", {"text": "x"}, "manager")
    assert status == 404
    due = (now + timedelta(hours=2)).isoformat()
    status, task = await _post(api, "/api/v1/tasks", {"client_id": a, "title": "Отправить договор",
                                                      "due_at": due, "assignee": "101"}, "manager")
    assert status == 201 and task["title"] == "Отправить договор" and task["kind"] == "task"
    for bad in ({"client_id": a, "title": ""}, {"client_id": a, "title": "x", "due_at": "tomorrow"},
                {"client_id": a, "title": "x", "assignee": "Vasya"}, {"title": "x"}):
        status, body = await _post(api, "/api/v1/tasks", bad, "manager")
        assert status == 422, (bad, body)
    status, _ = await _post(api, "/api/v1/tasks", {"client_id": 9999, "title": "x"}, "manager")
    assert status == 404
    # A card taking another card's number: the answer names the conflict.
    status, dup = await _post(api, "/api/v1/clients", {"name": "A again", "phones": ["8 495 111-00-01"]})
    assert status == 201 and dup["conflicts"] == [{"phone": "+74951110001", "client_id": a, "name": "A"}]
    # Merging keeps both timelines, the tasks, and re-points the calls.
    status, merged = await _post(api, f"/api/v1/clients/{c}/merge", {"from_id": a}, "manager")
    assert status == 200 and merged["id"] == c
    assert {p["e164"] for p in merged["phones"]} == {"+74951110001", "+74951110003"}
    assert merged["responsible"] == "102" and merged["source"] == "Сайт"
    async with api.runtime.engine.connect() as conn:
        kinds = sorted(e["kind"] for e in await list_timeline(conn, c))
        moved = (await conn.execute(sa.select(calls.c.client_id).where(calls.c.id == call_a))).scalar_one()
        left = await crm_cards.get_card(conn, a)
    assert kinds == ["call", "call", "merge", "note", "task"] and moved == c and left is None
    _, tasks = await _get(api, "/api/v1/tasks", client_id=str(c))
    assert [t["title"] for t in tasks["items"]] == ["Отправить договор"]
    for body, code in (({"from_id": c}, 422), ({"from_id": 9999}, 404), ({}, 422)):
        status, _ = await _post(api, f"/api/v1/clients/{c}/merge", body, "manager")
        assert status == code, body


async def test_call_back_lands_on_the_operators_rung_and_reaches_them_live(api: Api) -> None:
    """A missed call from a caller whose card has no responsible operator: every operator it rang
    gets the call-back, due in callback_due_minutes; task.updated reaches them live; one of them
    closes it; the shared group's tasks reach every operator."""
    api.runtime.settings.crm.callback_due_minutes = 30
    hook = CrmHook(api.runtime.engine, api.runtime.settings, bus=api.runtime.bus)
    ws = {}
    for role in ("operator", "operator102"):
        ws[role] = await api.client.ws_connect("/api/v1/events?types=task.updated", headers=api.auth(role))
        assert json.loads((await ws[role].receive()).data)["type"] == "ready"
    async with api.runtime.engine.begin() as conn:
        call_id = await insert_call(conn, status="no_answer", operators_rung=["101", "102"],
                                    customer_number="+79035550000")
        row = (await conn.execute(sa.select(calls).where(calls.c.id == call_id))).one()
    from pbx_bridge.calls.query import record_from_row

    record = record_from_row(row)
    await hook.on_change(CallChange("ended", record))
    for role in ("operator", "operator102"):
        message = json.loads((await asyncio.wait_for(ws[role].receive(), 5)).data)
        assert message["type"] == "task.updated" and message["task"]["assignees"] == ["101", "102"]
    task = message["task"]
    assert record.ended_at is not None
    due = datetime.fromisoformat(task["due_at"].replace("Z", "+00:00")).timestamp()
    assert abs(due - (record.ended_at + 1800)) < 1
    _, mine = await _get(api, "/api/v1/tasks", role="operator102", status="open")
    assert [t["id"] for t in mine["items"]] == [task["id"]]
    status, closed = await _post(api, f"/api/v1/tasks/{task['id']}/close", {}, "operator102")
    assert status == 200 and closed["status"] == "closed"
    # The group's task (a call that rang nobody): every operator sees and may close it.
    async with api.runtime.engine.begin() as conn:
        group_task = await crm_tasks.create_call_back(conn, client_id=None, number="+79035550001",
                                                      assignee="operators", call_id=None,
                                                      now=datetime.now(UTC))
    _, mine = await _get(api, "/api/v1/tasks", role="operator", status="open", order="due")
    assert [t["id"] for t in mine["items"]] == [group_task]
    for socket in ws.values():
        await socket.close()


def _ringing_changes(trace: str) -> list[CallChange]:
    tracker = CallTracker(settings_for(trace, pbx="main"))
    out = []
    for item in load_items(TRACES, trace, pbx="main"):
        if isinstance(item, AmiEvent):
            out += [c for c in tracker.feed(item) if c.kind == "ringing"]
    return out


async def test_call_ringing_only_for_a_customer_ringing_an_operator(api: Api) -> None:
    """The screen-pop rules on the API: no call.ringing for the operator's own phone rung first
    (click-to-call's first leg, the lab's outbound calls) nor for internal calls; those are
    call.updated with the reason and who is calling."""
    notifier = api.runtime.services["notifier"]
    ws = await api.client.ws_connect("/api/v1/events?types=call.ringing,call.updated",
                                     headers=api.auth("manager"))
    assert json.loads((await ws.receive()).data)["type"] == "ready"
    for trace in ("click_to_call", "internal_call", "inbound_answered"):
        for change in _ringing_changes(trace):
            await notifier.on_change(change)
    got = [json.loads((await asyncio.wait_for(ws.receive(), 5)).data) for _ in range(4)]
    summary = [(m["type"], m["extension"], m.get("reason"), m.get("from_extension")) for m in got]
    assert summary == [
        ("call.updated", "101", "own_call", "101"),  # click-to-call: 101's phone rung first
        ("call.updated", "101", "own_call", "101"),  # internal: the caller's own phone first ...
        ("call.updated", "102", "internal", "101"),  # ... then 102: a colleague, no pop
        ("call.ringing", "101", None, None),  # a customer calls 101: the pop
    ]
    assert got[3]["ad_channel"] is None and got[3]["call"]["direction"] == "inbound"
    await ws.close()


async def test_words_with_a_nul_byte_are_a_clear_422(api: Api) -> None:
    """Found by schemathesis on PostgreSQL (which refuses NUL in text): the journal's q= and the
    export's are 422, never a 500."""
    for path in ("/api/v1/calls", "/api/v1/calls/export"):
        status, body = await _get(api, path, q="цена\x00доставки")
        assert status == 422 and body["error"]["code"] == "invalid_field", (path, body)
