"""The web UI in a real browser: Debian's Chromium driven by Playwright against the real aiohttp
server on a free port, with the real API, a real SQLite database and the real features behind it.

Seeding goes through the features' own code: people through pbx_bridge.web.users, client cards,
the timeline and call-back tasks through crm_sync, the recording through the recordings catalog
with a WAV converted from a real PBX recording, the transcript through the transcription store
(its analytics from recordings.transcription.analytics). The screen pop comes from the real call
pipeline: AMI trace events -> CallConsumer (CallTracker) -> CRM hook -> notifier -> runtime.bus ->
WebSocket. Screenshots go to artifacts/screenshots/.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import os
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from aiohttp import web
from playwright.async_api import Browser, Page, async_playwright, expect

from crm_sync import cards, tasks, timeline
from crm_sync.contacts import CallFacts
from pbx_bridge.ami.events import AmiEvent
from pbx_bridge.calls.consumer import CallConsumer
from pbx_bridge.calls.queue import QueueItem
from pbx_bridge.clients.hook import CrmHook
from pbx_bridge.config import Settings
from pbx_bridge.crm_connectors.options import match_settings
from pbx_bridge.db import migrate
from pbx_bridge.db.engine import make_engine, make_sessionmaker
from pbx_bridge.recording.service import SERVICE_NAME, RecordingService
from pbx_bridge.runtime import Runtime
from pbx_bridge.server.app import make_app
from pbx_bridge.web import users as store
from recordings import catalog, convert
from recordings.mixmonitor import Segment
from recordings.transcription.analytics import TermLists, analyse
from recordings.transcription.dialog import build_turns, plain_text
from recordings.transcription.pipeline import TranscriptResult
from recordings.transcription.recognize import STEREO_SPEAKERS, Word
from recordings.transcription.store import save_transcript
from tests.tracker_support import load_items, settings_for
from tests.web_seed import insert_call

pytestmark = pytest.mark.browser
# The machine is shared: give the browser more than Playwright's default 5 s under load.
expect.set_options(timeout=15_000)

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
CHROMIUM_PRESENT = os.path.exists(CHROMIUM)
RAW = "519141ac-8349-46c7-8bc2-db8cbc411c84.raw"

WORDS = {  # the transcript's dialog: speaker -> [(word, start, end)]
    "operator": [("Здравствуйте,", 0.20, 0.80), ("компания", 0.85, 1.20), ("Ромашка.", 1.25, 1.70)],
    "customer": [("Хочу", 1.90, 2.10), ("узнать", 2.15, 2.45), ("цену", 2.50, 2.80),
                 ("доставки.", 2.85, 3.40)],
}
TERMS = TermLists(keywords=["цену"], required_phrases=["здравствуйте", "спасибо за звонок"])


@dataclass
class Site:
    base: str
    runtime: Runtime
    call_ids: dict[str, int]
    client_ids: dict[str, int]
    pipeline: asyncio.Queue[QueueItem]
    traces: Path


def facts(record: dict[str, Any]) -> CallFacts:
    """A seeded call as crm_sync sees calls (what the CRM hook maps a CallRecord onto)."""
    def at(key: str) -> datetime | None:
        return datetime.fromisoformat(record[key]) if record[key] else None

    started = at("started_at")
    assert started is not None
    return CallFacts(call_id=record["id"], direction=record["direction"], status=record["status"],
                     customer_number=record["customer_number"], customer_name=record["customer_name"],
                     did=record["did"], operator=record["operator"], started_at=started,
                     answered_at=at("answered_at"), ended_at=at("ended_at"),
                     wait_seconds=record["wait_seconds"], talk_seconds=record["talk_seconds"],
                     pbx=record["pbx"], linkedid=record["linkedid"])


async def seed_recording(runtime: Runtime, record: dict[str, Any], raw: Path) -> float:
    """The PBX's stereo raw file converted to the stored WAV, catalogued as ready, linked on the
    call's client timeline: what the recordings worker leaves behind."""
    service: RecordingService = runtime.services[SERVICE_NAME]
    now = datetime.now(UTC)
    pcm, problem = convert.read_stereo_raw(raw)
    assert problem is None
    rel = f"{now:%Y/%m/%d}/{record['id']}.wav"
    info = convert.write_wav([pcm], service.locations.recordings_dir / rel)
    segment = Segment(index=1, mode="stereo", channel="Local/101@operators-0001;1", operator="101",
                      files={"stereo": raw.name}, started_at=now.timestamp())
    async with runtime.engine.begin() as conn:
        row = await catalog.start_segment(conn, call_id=record["id"], pbx=record["pbx"],
                                          linkedid=record["linkedid"], rule="all", segment=segment,
                                          now=now)
        await catalog.update(conn, row.id, state="ready", stored_path=rel, format="wav",
                             channels=info.channels, sample_rate=info.sample_rate,
                             duration_seconds=info.duration_seconds, size_bytes=info.size_bytes,
                             sha256=info.sha256, ready_at=now, updated_at=now)
        ready = await catalog.get_by_call(conn, record["id"])
        assert ready is not None and ready.playable
        await timeline.add_timeline_link(conn, record["id"], "recording", {
            "recording_id": ready.id, "url": f"/api/v1/calls/{record['id']}/recording",
            "state": "ready", "duration_seconds": info.duration_seconds}, now)
    return info.duration_seconds


async def seed_transcript(runtime: Runtime, call_id: int, duration: float) -> None:
    words = {speaker: [Word(w, s, e, 0.93) for w, s, e in items] for speaker, items in WORDS.items()}
    turns = build_turns(words)
    result = TranscriptResult(turns=tuple(turns), plain_text=plain_text(turns),
                              analytics=analyse(turns, duration, STEREO_SPEAKERS, TERMS),
                              duration=duration, speakers=STEREO_SPEAKERS, language="ru",
                              model="vosk-model-small-ru")
    async with runtime.engine.begin() as conn:
        await save_transcript(conn, call_id, None, result)


async def seed(runtime: Runtime, traces: Path) -> tuple[dict[str, int], dict[str, int]]:
    now = datetime.now(UTC).replace(microsecond=0)
    match = match_settings(runtime.settings)
    ids: dict[str, int] = {}
    clients: dict[str, int] = {}
    async with runtime.engine.begin() as conn:
        await store.create_user(conn, username="anna", password="pass-word-1", role="manager")
        await store.create_user(conn, username="op1", password="pass-word-2", role="operator",
                                extension="101")
        # Twelve days of traffic for the journal and the report: inside the report's default
        # 14-day window whatever the time of day the test runs.
        for i in range(36):
            status = ("answered", "answered", "no_answer", "answered", "abandoned", "busy")[i % 6]
            await insert_call(conn, started_at=now - timedelta(hours=8 * i + 2), status=status,
                              direction="outbound" if status == "busy" else "inbound",
                              operator=("101", "102", "103")[i % 3] if status == "answered" else None,
                              operators_rung=[("101", "102", "103")[i % 3]],
                              did=("+74951110000", "+74952220000")[i % 2],
                              customer_number=f"+7916555{i:04d}", wait_seconds=3 + (i * 7) % 80,
                              talk_seconds=30 + i * 11 if status == "answered" else 0)
        # Ivan's card has the number the inbound_answered trace calls from.
        clients["ivan"] = await cards.create_card(conn, cards.CardInput(
            name="Иван Петров", phones=["+79161234567", "+7 495 123-45-67"], company="ООО «Ромашка»",
            emails=["ivan@example.ru"], notes="Постоянный клиент", responsible="101", tags=["VIP"]),
            match, now - timedelta(days=30))
        clients["anna"] = await cards.create_card(conn, cards.CardInput(
            name="Anna Smith", phones=["+79035550101"], responsible="102"), match,
            now - timedelta(days=30))
        main = await insert_call(conn, started_at=now - timedelta(minutes=50), status="answered",
                                 operator="101", customer_number="+79161234567",
                                 customer_name="Иван Петров", client_id=clients["ivan"],
                                 wait_seconds=6, talk_seconds=3.84)
        ids["recorded"] = main["id"]
        await timeline.attach_call(conn, clients["ivan"], facts(main))
        await timeline.add_note(conn, clients["ivan"], "Просил счёт на почту",
                                now - timedelta(days=2), author="anna")
        missed = await insert_call(conn, started_at=now - timedelta(minutes=20), status="no_answer",
                                   operators_rung=["101"], customer_number="+79035550101",
                                   client_id=clients["anna"], wait_seconds=41)
        ids["missed"] = missed["id"]
        await timeline.attach_call(conn, clients["anna"], facts(missed))
        # The missed call's call-back task, for operator 101 (as the CRM hook opens it).
        await tasks.create_call_back(conn, client_id=clients["anna"], number="+79035550101",
                                     assignee="101", call_id=missed["id"],
                                     now=now - timedelta(minutes=19), due_at=now + timedelta(hours=1))
    duration = await seed_recording(runtime, main, traces / "recordings" / RAW)
    await seed_transcript(runtime, ids["recorded"], duration)
    return ids, clients


@pytest.fixture
async def site(tmp_path: Path, traces: Path) -> AsyncIterator[Site]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'ui.sqlite3'}"
    engine = make_engine(url)
    await migrate.upgrade(engine)
    settings = Settings()
    settings.server.data_dir = str(tmp_path)
    settings.database.url = url
    settings.crm.did_sources = {"+74951110000": "Яндекс Директ"}
    settings.recordings.local_spool_dir = str(tmp_path / "spool")
    runtime = Runtime(settings=settings, engine=engine, sessions=make_sessionmaker(engine))
    runtime.services[SERVICE_NAME] = RecordingService(runtime)
    ids, clients = await seed(runtime, traces)
    app = make_app(runtime)
    # The call pipeline as serve() runs it, fed with AMI events from the traces: the tracker
    # makes the call changes, the CRM hook finds the card, the notifier publishes on the bus.
    queue: asyncio.Queue[QueueItem] = asyncio.Queue()
    tracker = settings_for("inbound_answered", pbx="main")
    consumer = CallConsumer(queue, engine, lambda name: tracker if name == "main" else None,
                            [CrmHook(engine, settings, bus=runtime.bus), runtime.services["notifier"]])
    pipeline = asyncio.create_task(consumer.run())
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    port = runner.addresses[0][1]
    yield Site(f"http://127.0.0.1:{port}", runtime, ids, clients, queue, traces)
    await consumer.stop()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(pipeline, 5)
    await runner.cleanup()
    await engine.dispose()


def trace_events(site: Site, name: str) -> list[QueueItem]:
    return load_items(site.traces, name, pbx="main")


def feed(site: Site, items: list[QueueItem]) -> None:
    for item in items:
        site.pipeline.put_nowait(item)


def until_ringing(items: list[QueueItem], extension: str) -> int:
    """Index just past the event that rings the operator's phone (Dial to their channel)."""
    for i, item in enumerate(items):
        if (isinstance(item, AmiEvent) and item.name == "DialBegin"
                and f"/{extension}@" in item.get("DestChannel", "")):
            return i + 1
    raise AssertionError(f"the trace never rings {extension}")


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM_PRESENT:
        pytest.fail(f"{CHROMIUM} is missing: `make browser-deps` installs Debian's chromium")
    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                            args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


async def new_page(browser: Browser, locale: str = "ru-RU") -> Page:
    context = await browser.new_context(locale=locale, viewport={"width": 1360, "height": 860},
                                        accept_downloads=True)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # Uncaught exceptions, errors the scripts log, and failed loads of our own files.
    page.on("console", lambda msg: errors.append(msg.text)
            if msg.type == "error" and not msg.text.startswith("Failed to load resource") else None)
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}")
            if r.status >= 400 and "/ui/static/" in r.url else None)
    page.js_errors = errors  # type: ignore[attr-defined]
    # What the browser asked the API and got: checked from the browser's side, so the same
    # assertions hold for the stand-in and for the real API once it is merged.
    traffic: list[dict[str, Any]] = []
    page.on("requestfinished", lambda req: asyncio.ensure_future(_record(req, traffic)))
    page.api_traffic = traffic  # type: ignore[attr-defined]
    return page


async def _record(request: Any, traffic: list[dict[str, Any]]) -> None:
    if "/api/" not in request.url:
        return
    response = await request.response()
    traffic.append({"method": request.method, "url": urlsplit(request.url),
                    "query": dict(parse_qsl(urlsplit(request.url).query)),
                    "body": request.post_data, "status": response.status if response else None,
                    "range": request.headers.get("range")})


def api_calls(page: Page, path: str, method: str = "GET") -> list[dict[str, Any]]:
    traffic: list[dict[str, Any]] = page.api_traffic  # type: ignore[attr-defined]
    return [t for t in traffic if t["url"].path == path and t["method"] == method]


async def sent(page: Page, path: str, matches: Any, method: str = "GET") -> dict[str, Any]:
    """The browser's request to `path` that `matches` (the log fills in asynchronously)."""
    deadline = time.monotonic() + 15
    while True:
        found = [t for t in api_calls(page, path, method) if matches(t)]
        if found:
            return found[-1]
        if time.monotonic() > deadline:
            raise AssertionError(f"no {method} {path} like that among {api_calls(page, path, method)}")
        await asyncio.sleep(0.05)


async def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


async def sign_in(page: Page, site: Site, username: str, password: str, start: str = "/ui/") -> None:
    await page.goto(site.base + start)
    await page.wait_for_url("**/ui/login**")
    await page.fill("input[name=username]", username)
    await page.fill("input[name=password]", password)
    await page.click("button[type=submit]")
    await page.wait_for_load_state("networkidle")


async def until(page: Page, expression: str, seconds: float = 15.0) -> None:
    """Poll a JS expression (wait_for_function would need 'unsafe-eval', which our CSP forbids)."""
    deadline = time.monotonic() + seconds
    while not await page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {seconds} s: {expression}")
        await asyncio.sleep(0.05)


def no_js_errors(page: Page) -> None:
    assert page.js_errors == []  # type: ignore[attr-defined]


async def test_sign_in_and_screen_pop(site: Site, browser: Browser) -> None:
    page = await new_page(browser)
    await page.goto(site.base + "/ui/calls")
    await page.wait_for_url("**/ui/login?next=**")
    assert await page.inner_text("h1") == "pbx-bridge"
    await page.fill("input[name=username]", "op1")
    await page.fill("input[name=password]", "wrong password")
    await page.click("button[type=submit]")
    assert "Неверное имя пользователя или пароль" in await page.inner_text(".error")
    await shot(page, "01-sign-in-failed")
    await page.fill("input[name=password]", "pass-word-2")
    await page.click("button[type=submit]")
    await page.wait_for_url("**/ui/calls")
    await page.goto(site.base + "/ui/live")
    await page.wait_for_selector("#live-status.up")  # the WebSocket is connected
    await page.wait_for_selector("#missed-calls tbody tr")
    assert "+79035550101" in await page.inner_text("#missed-calls")
    assert "Перезвонить" in await page.inner_text("#tasks")

    # Another operator's phone rings (the inbound_noanswer trace rings 102): nothing pops here.
    feed(site, trace_events(site, "inbound_noanswer"))
    await asyncio.sleep(1.0)
    assert await page.is_hidden("#screen-pop")

    # My extension rings (the inbound_answered trace, up to the Dial to 101): the caller's card
    # pops up within a second of the event entering the pipeline.
    answered = trace_events(site, "inbound_answered")
    ring = until_ringing(answered, "101")
    started = time.monotonic()
    feed(site, answered[:ring])
    await page.wait_for_selector("#screen-pop:not([hidden]) .pop-name", timeout=1000)
    latency = time.monotonic() - started
    assert latency < 1.0
    assert await page.inner_text("#screen-pop .pop-name") == "Иван Петров"
    ivan = site.client_ids["ivan"]
    assert await page.get_attribute("#pop-card-link", "href") == f"/ui/clients/{ivan}"
    row = "#live-calls tbody tr:has(button.c2c[data-number='+74951234567'])"
    await page.wait_for_selector(row)
    await shot(page, "02-live-screen-pop-known")

    # Click-to-call from the live panel's number button: the real API, with no PBX connected,
    # refuses with 503 and the page says so.
    await page.click(f"{row} button.c2c")
    c2c = await sent(page, "/api/v1/click-to-call", lambda t: True, "POST")
    assert json.loads(c2c["body"]) == {"extension": "101", "number": "+74951234567", "client_id": ivan}
    assert c2c["status"] == 503
    await page.wait_for_selector(".toast.error")

    # The rest of the call: answered, then over; it leaves the live list.
    feed(site, answered[ring:])
    await page.wait_for_selector(row, state="detached")

    # An unknown caller rings 101 (the inbound_busy trace): "new contact", with a link to create
    # the card.
    feed(site, trace_events(site, "inbound_busy"))
    await page.wait_for_selector("#screen-pop .pop-name.new", timeout=2000)
    # Named by the caller ID when there is one (this trace has none: the number), marked new.
    assert await page.inner_text("#screen-pop .pop-name") == "+79161112233"
    assert await page.inner_text("#screen-pop .pop-new") == "Новый контакт"
    await shot(page, "03-live-screen-pop-new-contact")
    await page.click("#pop-card-link")
    await page.wait_for_url("**/ui/clients/new?phone=%2B79161112233**")
    assert await page.input_value("textarea[name=phones]") == "+79161112233"
    assert await page.input_value("input[name=responsible]") == "101"
    await shot(page, "04-new-client-from-pop")
    await page.goto(site.base + "/ui/settings")
    await page.select_option("select[name=language]", "en")
    await page.click("form.card button[type=submit]")
    await page.wait_for_url("**/ui/settings?saved=1")
    assert await page.inner_text("h1") == "Settings"  # the person's choice beats the browser's
    await shot(page, "11-settings-en")
    no_js_errors(page)
    print(f"screen pop latency (trace events -> pipeline -> WebSocket -> page): {latency * 1000:.0f} ms")


async def test_journal_filters_sorting_paging_and_playback(site: Site, browser: Browser) -> None:
    page = await new_page(browser)
    await sign_in(page, site, "anna", "pass-word-1")
    await page.wait_for_url("**/ui/calls")
    await page.wait_for_selector("#journal tbody tr")
    assert await page.locator("#journal tbody tr").count() == 38
    await shot(page, "05-journal")
    # Missed calls only.
    await page.select_option("select[name=status]", "missed")
    await page.click("#filters button[type=submit]")
    await expect(page.locator("#journal tbody tr")).to_have_count(13)
    statuses = await page.locator("#journal tbody tr .badge").all_inner_texts()
    # Missed calls keep their own labels: no answer, abandoned (busy ones here are outbound).
    assert set(statuses) == {"Нет ответа", "Сброшен"}
    assert await page.locator("#journal tbody tr .badge.missed").count() == 13
    assert "status=missed" in page.url
    await sent(page, "/api/v1/calls", lambda t: t["query"].get("missed") == "true")
    # Plus one operator, and a DID: missed calls were answered by nobody; they rang 102.
    await page.fill("input[name=operator]", "102")
    await page.fill("input[name=did]", "+74951110000")
    await page.click("#filters button[type=submit]")
    await expect(page.locator("#journal tbody tr")).to_have_count(0)
    await sent(page, "/api/v1/calls", lambda t: t["query"].get("operator_role") == "answered")
    await page.select_option("select[name=operator_role]", "rang")
    await page.click("#filters button[type=submit]")
    await expect(page.locator("#journal tbody tr")).to_have_count(6)
    await sent(page, "/api/v1/calls", lambda t: t["query"].get("operator") == "102"
               and t["query"].get("operator_role") == "rang"
               and t["query"].get("did") == "+74951110000" and t["query"].get("missed") == "true")
    await shot(page, "05-journal-filtered")
    await page.click("#filters button[type=reset]")
    await expect(page.locator("#journal tbody tr")).to_have_count(38)
    # Sorting and paging.
    await page.select_option("#page-size", "25")
    await page.click("#filters button[type=submit]")
    await expect(page.locator("#journal tbody tr")).to_have_count(25)
    # The API sorts the whole journal (?sort=-wait_seconds), not the page loaded: the first page
    # holds the 25 longest waits, the second the 13 shortest.
    async with page.expect_response(lambda r: "sort=-wait_seconds" in r.url):
        await page.click("th[data-sort=wait_seconds]")
    await expect(page.locator("th[data-sort=wait_seconds]")).to_have_class(re.compile(r"\bdesc\b"))

    async def shown_waits() -> list[int]:
        waits = await page.locator("#journal tbody tr td:nth-child(5)").all_inner_texts()
        return [int(w.split(":")[0]) * 60 + int(w.split(":")[1]) if ":" in w else -1 for w in waits]

    first = await shown_waits()
    assert first == sorted(first, reverse=True) and first[0] > first[-1]
    assert "sort=-wait_seconds" in page.url  # a reload keeps the order
    await page.click("#next-page")
    await expect(page.locator("#journal tbody tr")).to_have_count(13)
    second = await shown_waits()
    assert second == sorted(second, reverse=True) and max(second) <= min(first)
    assert await page.is_disabled("#next-page") and not await page.is_disabled("#prev-page")
    await page.click("#prev-page")
    await expect(page.locator("#journal tbody tr")).to_have_count(25)
    assert await shown_waits() == first
    # Back to newest first, from the first page.
    async with page.expect_response(lambda r: "sort=-started_at" in r.url):
        await page.click("th[data-sort=started_at]")
    await expect(page.locator("th[data-sort=started_at]")).to_have_class(re.compile(r"\bdesc\b"))
    assert await page.is_disabled("#prev-page")
    # Play a recording from its row.
    row = f"#journal tbody tr[data-call-id='{site.call_ids['recorded']}']"
    await page.click(f"{row} button.play")
    await until(page, "document.getElementById('row-player').currentTime > 0.3")
    assert not await page.evaluate("document.getElementById('row-player').paused")
    # The list does not say which calls have a recording: answered ones get a button.
    answered = await page.locator("#journal tbody .badge.st-answered").count()
    assert await page.locator("button.play").count() == answered
    no_js_errors(page)


async def test_call_page_player_and_transcript(site: Site, browser: Browser) -> None:
    page = await new_page(browser)
    call_id = site.call_ids["recorded"]
    await sign_in(page, site, "anna", "pass-word-1", start=f"/ui/calls/{call_id}")
    await page.wait_for_url(f"**/ui/calls/{call_id}")
    await page.wait_for_selector("#transcript .word")
    await until(page, "document.getElementById('player').readyState >= 1")
    assert await page.evaluate("document.getElementById('player').duration") == pytest.approx(3.84, abs=0.01)
    assert await page.locator(".turn.operator").count() == 1
    assert await page.locator(".turn.customer").count() == 1
    assert await page.inner_text(".turn.customer .turn-text") == "Хочу узнать цену доставки."
    assert "ООО «Ромашка»" in await page.inner_text("#client-summary")
    tags = await page.locator("#tags .tag").all_inner_texts()
    assert [t.split(" · ")[0] for t in tags] == ["цену", "здравствуйте", "спасибо за звонок"]
    assert await page.get_attribute("#tags .tag-missing", "title") == "обязательной фразы нет"
    assert "Оператор 120 · Клиент 160" in await page.inner_text("#analytics")  # words per minute
    assert await page.is_hidden("#job-state")

    # A click on a word seeks there and plays; the word lights up.
    await page.click(".word:text-is('цену')")
    position = await page.evaluate("document.getElementById('player').currentTime")
    assert 2.5 <= position < 2.8
    await page.wait_for_selector(".word.current:text-is('цену')", timeout=2000)
    await shot(page, "06-call-page-playing")
    # Playing on, the highlight follows the audio to the next word.
    await page.wait_for_selector(".word.current:text-is('доставки.')", timeout=3000)
    assert await page.locator(".word.current").count() == 1
    # An earlier word: the player goes back.
    await page.click(".word:text-is('компания')")
    position = await page.evaluate("document.getElementById('player').currentTime")
    assert 0.85 <= position < 1.2
    await page.evaluate("document.getElementById('player').pause()")
    # The browser fetched the audio with Range requests and got partial content.
    await sent(page, f"/api/v1/calls/{call_id}/recording",
               lambda t: t["status"] == 206 and (t["range"] or "").startswith("bytes="))
    no_js_errors(page)


async def test_player_speed_download_and_keys(site: Site, browser: Browser) -> None:
    page = await new_page(browser)
    call_id = site.call_ids["recorded"]
    await sign_in(page, site, "anna", "pass-word-1", start=f"/ui/calls/{call_id}")
    await until(page, "document.getElementById('player').readyState >= 1")
    await page.click("button.speed[data-rate='2']")
    assert await page.evaluate("document.getElementById('player').playbackRate") == 2
    assert await page.get_attribute("#download", "href") == f"/api/v1/calls/{call_id}/recording"
    await page.click("h1")  # focus off the buttons: keys go to the player
    await page.keyboard.press(" ")
    await until(page, "!document.getElementById('player').paused")
    await page.keyboard.press(" ")
    await until(page, "document.getElementById('player').paused")
    await page.evaluate("document.getElementById('player').currentTime = 0")
    await page.keyboard.press("ArrowRight")
    position = await page.evaluate("document.getElementById('player').currentTime")
    assert position == pytest.approx(3.84, abs=0.05)  # +5 s, held at the end of a 3.84 s call
    await page.keyboard.press("ArrowLeft")
    assert await page.evaluate("document.getElementById('player').currentTime") == 0
    # The transcript says which model and language made it (a Russian model here: no warning).
    assert "vosk-model-small-ru" in await page.inner_text("#transcript-model")
    assert await page.is_hidden("#model-warning")
    no_js_errors(page)


async def test_client_cards(site: Site, browser: Browser) -> None:
    page = await new_page(browser)
    await sign_in(page, site, "op1", "pass-word-2", start="/ui/clients")
    await page.wait_for_url("**/ui/clients")
    # Every card, most recently active first, before any search.
    await expect(page.locator("#clients tbody tr")).to_have_count(2)
    await page.fill("input[name=q]", "Петров")
    await page.click("#client-search button[type=submit]")
    await expect(page.locator("#clients tbody tr")).to_have_count(1)
    await shot(page, "07-clients")
    await page.click("#clients tbody a")
    ivan = site.client_ids["ivan"]
    await page.wait_for_url(f"**/ui/clients/{ivan}")
    await page.wait_for_selector("#timeline li.tl-call audio")
    assert await page.inner_text("#client-title") == "Иван Петров"
    timeline = await page.inner_text("#timeline")
    assert "Просил счёт на почту" in timeline and "— anna" in timeline
    assert await page.locator("#timeline li").count() == 2  # the recording entry folds into its call
    assert "VIP" in await page.inner_text("#client-facts")
    await shot(page, "08-client-card")
    await page.click("#edit-client")
    await page.fill("input[name=name]", "Иван Петрович Петров")
    await page.fill("textarea[name=phones]", "+79161234567\n+74957654321")
    await page.click("#client-form button[type=submit]")
    await page.wait_for_selector("#client-view:not([hidden])")
    assert await page.inner_text("#client-title") == "Иван Петрович Петров"
    async with site.runtime.engine.connect() as conn:
        card = await cards.get_card(conn, ivan)
    assert card is not None and card["name"] == "Иван Петрович Петров"
    assert [p["e164"] for p in card["phones"]] == ["+79161234567", "+74957654321"]
    assert await page.locator("#client-facts button.c2c").count() == 2
    # A new card from the screen pop's link.
    await page.goto(site.base + "/ui/clients/new?phone=%2B79990001122")
    await page.fill("input[name=name]", "Новый Клиент")
    await page.click("#client-form button[type=submit]")
    await page.wait_for_url(re.compile(r".*/ui/clients/\d+$"))
    new_id = int(page.url.rsplit("/", 1)[1])
    async with site.runtime.engine.connect() as conn:
        created = await cards.get_card(conn, new_id)
    assert created is not None and created["name"] == "Новый Клиент"
    assert [p["e164"] for p in created["phones"]] == ["+79990001122"]
    assert created["responsible"] == "101"
    no_js_errors(page)


async def test_card_page_offers_only_what_the_role_may_do(site: Site, browser: Browser) -> None:
    """Issue 18: an operator never edits `responsible`, closes only their own tasks and does not
    see another operator's card; a manager closes no task."""
    anna = site.client_ids["anna"]  # responsible 102; its missed call rang 101; its task is 101's
    async with site.runtime.engine.begin() as conn:
        other = await cards.create_card(conn, cards.CardInput(
            name="Чужой Клиент", phones=["+79035550199"], responsible="102"),
            match_settings(site.runtime.settings), datetime.now(UTC))
    manager = await new_page(browser)
    await sign_in(manager, site, "anna", "pass-word-1", start=f"/ui/clients/{anna}")
    await manager.wait_for_selector("#timeline li.tl-task")
    assert await manager.locator("#timeline li.tl-task button").count() == 0
    await manager.click("#edit-client")
    assert await manager.get_attribute("input[name=responsible]", "readonly") is None
    no_js_errors(manager)
    operator = await new_page(browser)
    await sign_in(operator, site, "op1", "pass-word-2", start=f"/ui/clients/{anna}")
    await operator.wait_for_selector("#timeline li.tl-task button")
    await operator.click("#edit-client")
    assert await operator.get_attribute("input[name=responsible]", "readonly") is not None
    await operator.click("#client-form button[type=submit]")  # saving sends responsible back unchanged
    await operator.wait_for_selector("#client-view:not([hidden])")
    await operator.click("#timeline li.tl-task button")
    await expect(operator.locator("#timeline li.tl-task button")).to_have_count(0)
    await operator.goto(site.base + f"/ui/clients/{other}")
    await operator.wait_for_selector("#client-error:not([hidden])")
    assert "Чужой Клиент" not in await operator.content()
    no_js_errors(operator)


async def test_reports_page(site: Site, browser: Browser) -> None:
    page = await new_page(browser, locale="en-GB")
    await sign_in(page, site, "anna", "pass-word-1", start="/ui/reports")
    await page.wait_for_url("**/ui/reports")
    assert await page.locator("svg.chart").count() == 4
    kpis = await page.locator(".kpi-value").all_inner_texts()
    assert kpis[0] == "38"
    # Ad channels by crm.did_sources; an unnamed DID is its own channel.
    channels = await page.inner_text("#report-source table")
    assert "Яндекс Директ" in channels and "+74952220000" in channels
    assert "+74951110000" not in channels
    assert await page.locator("#report-day svg rect.series-answered").count() > 5
    await shot(page, "09-reports-en")
    async with page.expect_download() as download_info:
        await page.click("#report-operator .export a")
    download = await download_info.value
    text = await asyncio.to_thread(Path(await download.path()).read_text, "utf-8-sig")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0][0] == "operator" and rows[-1][0] == "total" and rows[-1][1] == "38"
    # The same page in Russian, for people who read it.
    ru = await new_page(browser, locale="ru-RU")
    await sign_in(ru, site, "anna", "pass-word-1", start="/ui/reports")
    assert "Звонки по дням" in await ru.inner_text("#report-day h2")
    await shot(ru, "10-reports-ru")
    # An operator has no access to reports.
    op = await new_page(browser)
    await sign_in(op, site, "op1", "pass-word-2", start="/ui/reports")
    assert await op.inner_text("h1") == "Нет доступа"
    await shot(op, "12-forbidden")
    no_js_errors(page)


async def test_api_js_reads_the_api_field_names_only(site: Site, browser: Browser) -> None:
    """api.js normalizes the API's own shapes (the OpenAPI document's names); the legacy
    spellings it used to accept (full_name, owner, {phone, kind}, "event", "snippet", bare
    transcripts, tag objects) are no longer read (issue 17)."""
    page = await new_page(browser)
    await sign_in(page, site, "anna", "pass-word-1")
    got = await page.evaluate("""(() => {
      const a = PBX.api;
      const call1 = a._call({id: 1, status: "answered", ended_at: "2026-11-20T10:00:00Z",
                             transcript: {state: "done", analytics: {tags: ["keyword:цена"]}}});
      const call2 = a._call({id: 2, status: "answered", ended_at: null, recording: null, client_id: 5,
                             client: {id: 5, name: "X", phones: [{e164: "+7916", raw: "8 916"}]}});
      const missing = a._call({id: 3, status: "answered", ended_at: "x", recording: {state: "missing"}});
      const cut = a._call({id: 4, status: "answered", ended_at: "x", recording: {state: "truncated"}});
      const hit = a._call({id: 5, match: {snippet: "цену [доставки]", speaker: "customer", offset: 12.5}});
      const card = a._client({id: 4, name: "Z", phones: [{e164: "+7916", raw: "8 916"}], emails: ["z@x.ru"],
                              responsible: "101", auto_created: true});
      const event = a._event({type: "call.ringing", call: {id: 9}, extension: "101", client: null});
      const tl = a._timelineEntry({id: 1, kind: "call", call_id: 7, at: "2026-11-20T10:00:00Z",
                                   payload: {status: "answered", ended_at: "x",
                                             links: {recording: {state: "ready"}}}});
      const empty = a._transcript({call_id: 1, job: {state: "running"}, transcript: null});
      const full = a._transcript({call_id: 1, job: null, transcript: {language: "ru", model: "m", text: "да",
        turns: [{speaker: "operator", start: 1, end: 1.2, text: "да",
                 words: [{word: "да", start: 1, end: 1.2, conf: 1}]}],
        analytics: {keyword_hits: [{term: "да", start: 1}], tags: ["keyword:да", "flagged:нет"]}}});
      // Legacy spellings: read no more.
      const oldClient = a._client({id: 3, full_name: "Y", phones: [{phone: "+7495", kind: "work"}],
                                   owner: "102"});
      const oldEvent = a._event({event: "call.ringing"});
      const oldHit = a._call({id: 6, snippet: "цену доставки"});
      const oldBare = a._transcript({turns: [{speaker: "operator", start: 1, end: 2, text: "да",
                                              words: []}]});
      return {
        call1: [call1.live, call1.hasRecording, call1.tags.map(t => [t.label, t.kind])],
        call2: [call2.live, call2.hasRecording, call2.client.name, call2.client.phones[0].number,
                call2.client_id],
        recordings: [missing.hasRecording, cut.hasRecording],
        hit: [hit.snippet.text, hit.snippet.offset, hit.snippet.speaker],
        card: [card.phones[0].number, card.email, card.responsible, card.isNew],
        event: [event.type, event.call.id, event.client],
        timeline: [tl.kind, tl.call.id, tl.call.hasRecording],
        empty: [empty.turns.length, empty.job.state],
        full: [full.turns[0].start, full.turns[0].text, full.language,
               full.tags.map(t => [t.label, t.kind, t.start])],
        legacy: [oldClient.name, oldClient.phones[0].number, oldClient.responsible, oldEvent.type,
                 oldHit.snippet, oldBare.turns.length],
      };
    })()""")
    assert got == {
        "call1": [False, True, [["цена", "keyword"]]],
        "call2": [True, True, "X", "+7916", 5],  # null recording = not told: an answered call may have one
        "recordings": [False, True],
        "hit": ["цену [доставки]", 12.5, "customer"],
        "card": ["+7916", "z@x.ru", "101", True],
        "event": ["call.ringing", 9, None],
        "timeline": ["call", 7, True],
        "empty": [0, "running"],
        "full": [1, "да", "ru", [["да", "keyword", 1], ["нет", "flagged", None]]],
        "legacy": ["", "", None, "", None, 0],
    }


async def test_journal_transcript_search(site: Site, browser: Browser) -> None:
    page = await new_page(browser)
    await sign_in(page, site, "anna", "pass-word-1")
    await page.wait_for_url("**/ui/calls")
    await expect(page.locator("#journal tbody tr")).to_have_count(38)
    await page.fill("input[name=q]", "цену доставки")
    await page.click("#filters button[type=submit]")
    # The field is the API's q= (words said in the call, searched in the transcripts).
    await sent(page, "/api/v1/calls", lambda t: t["query"].get("q") == "цену доставки")
    assert "q=" in page.url
    await expect(page.locator("#journal tbody tr[data-call-id]")).to_have_count(1)
    snippet = await page.inner_text("#journal tr.snippet")
    assert snippet.startswith("Клиент: ") and "цену" in snippet and "0:02" in snippet
    assert await page.locator("#journal tr.snippet mark").count() >= 1  # the words found
    assert await page.get_attribute("#journal tr.snippet a", "href") == (
        f"/ui/calls/{site.call_ids['recorded']}#t=2.5")
    await shot(page, "05-journal-search")
    no_js_errors(page)


async def test_operator_roles_with_the_real_api(site: Site, browser: Browser) -> None:
    """Operators read and edit client cards and see their own call-back tasks; what the API
    refuses them (another operator's transcript: 403) the page says calmly, without errors."""
    page = await new_page(browser)
    await sign_in(page, site, "op1", "pass-word-2", start="/ui/live")
    await page.wait_for_selector("#tasks li.task")
    anna = site.client_ids["anna"]
    assert "+79035550101" in await page.inner_text("#tasks")
    assert await page.get_attribute("#tasks li.task a", "href") == f"/ui/clients/{anna}"
    await page.goto(site.base + f"/ui/clients/{anna}")
    await page.wait_for_selector("#client-facts button.c2c")
    assert await page.is_visible("#edit-client")
    # The missed call rang 101 but nobody took it: the call is op1's to see, its transcript
    # (of another operator's conversation, had there been one) is not.
    await page.goto(site.base + f"/ui/calls/{site.call_ids['missed']}")
    await page.wait_for_selector("#transcript p.muted")
    assert await page.inner_text("#transcript p.muted") == "Недоступно для вашей роли."
    assert await page.locator(".toast.error").count() == 0
    await shot(page, "13-operator-call-not-theirs")
    no_js_errors(page)
