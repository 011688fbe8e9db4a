"""Client cards and caller matching on real SQLite and PostgreSQL."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from crm_sync import cards
from crm_sync.cards import CardChanges, CardError, CardInput, CardNotFound
from crm_sync.matching import MatchSettings, match_number
from crm_sync.routing import responsible_for
from crm_sync.schema import client_phones, clients

RU = MatchSettings(region="RU", match_digits=10, max_extension_length=5)
T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)


async def make(
    engine: AsyncEngine,
    name: str,
    phones: list[str],
    *,
    at: datetime = T0,
    responsible: str | None = None,
    allow_unparsed: bool = False,
) -> int:
    async with engine.begin() as conn:
        return await cards.create_card(
            conn,
            CardInput(name=name, phones=phones, responsible=responsible),
            RU,
            at,
            allow_unparsed=allow_unparsed,
        )


async def test_create_and_read_card(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        cid = await cards.create_card(
            conn,
            CardInput(
                name="  Иван   Петров ",
                phones=["8 (495) 123-45-67", "+7 916 555 01 01", "84951234567"],
                emails=["Ivan@Example.COM"],
                company="ООО Ромашка",
                responsible="101",
                source="website",
                tags=["vip", "vip", "опт"],
                notes="first contact",
            ),
            RU,
            T0,
        )
    async with engine.connect() as conn:
        card = await cards.get_card(conn, cid)
    assert card is not None
    assert card["name"] == "Иван Петров"
    # The duplicate number (same E.164, other format) is stored once; the text as entered is kept.
    assert card["phones"] == [
        {"e164": "+74951234567", "raw": "8 (495) 123-45-67"},
        {"e164": "+79165550101", "raw": "+7 916 555 01 01"},
    ]
    assert card["emails"] == ["ivan@example.com"]
    assert card["tags"] == ["vip", "опт"]
    assert card["responsible"] == "101" and card["company"] == "ООО Ромашка"
    assert card["created_at"].endswith("Z")


async def test_exact_match_any_format(engine: AsyncEngine) -> None:
    cid = await make(engine, "Olga", ["+7 495 765-43-21"])
    async with engine.connect() as conn:
        for caller in ("+74957654321", "84957654321", "74957654321", "8 (495) 765-43-21"):
            m = await match_number(conn, caller, RU)
            assert m.client_id == cid, caller
            assert not m.ambiguous
        assert (await match_number(conn, "+74957654322", RU)).client_id is None


async def test_fallback_on_suffix_for_unparsed_stored_number(engine: AsyncEngine) -> None:
    # Typed with a foreign "00" prefix that does not parse for RU: kept as entered, no E.164.
    cid = await make(engine, "Legacy", ["00 7 495 123 45 67"], allow_unparsed=True)
    async with engine.connect() as conn:
        row = (await conn.execute(sa.select(client_phones).where(client_phones.c.client_id == cid))).one()
        assert (row.e164, row.raw, row.suffix) == (None, "00 7 495 123 45 67", "4951234567")
        m = await match_number(conn, "+7 495 123-45-67", RU)
        assert m.client_id == cid and not m.ambiguous
        assert (await match_number(conn, "+7 495 123-45-68", RU)).client_id is None


async def test_unparsed_number_refused_unless_allowed(engine: AsyncEngine) -> None:
    with pytest.raises(CardError, match="not a valid phone number for region RU"):
        await make(engine, "Legacy", ["00 7 495 123 45 67"])
    with pytest.raises(CardError, match="too few digits"):
        await make(engine, "Legacy", ["tel 12-34"], allow_unparsed=True)


async def test_suffix_fallback_is_not_used_for_parsed_numbers(engine: AsyncEngine) -> None:
    # Two valid numbers from different countries share the last 10 digits: no cross-match.
    await make(engine, "Kazakh", ["+7 701 234 5678"])
    async with engine.connect() as conn:
        assert (await match_number(conn, "+1 701 234 5678", RU)).client_id is None


async def test_match_digits_configurable(engine: AsyncEngine) -> None:
    cid = await make(engine, "Short", ["x 12-34-567"], allow_unparsed=True)
    async with engine.connect() as conn:
        assert (await match_number(conn, "+7 495 1234567", MatchSettings("RU", 7, 5))).client_id == cid
        assert (await match_number(conn, "+7 495 1234567", MatchSettings("RU", 10, 5))).client_id is None


async def test_ambiguous_most_recently_active_wins(engine: AsyncEngine) -> None:
    old = await make(engine, "Old card", ["+74951110101"], at=T0)
    new = await make(engine, "New card", ["84951110101"], at=T0 + timedelta(days=1))
    async with engine.connect() as conn:
        m = await match_number(conn, "+74951110101", RU)
    assert m.client_id == new and m.ambiguous and set(m.candidate_ids) == {old, new}
    async with engine.begin() as conn:
        await cards.touch_activity(conn, old, T0 + timedelta(days=2))
    async with engine.connect() as conn:
        m = await match_number(conn, "+74951110101", RU)
    assert m.client_id == old and m.ambiguous


@pytest.mark.parametrize("caller", ["101", "2005", " 102 ", "", None, "anonymous", "<unknown>"])
async def test_extensions_and_anonymous_never_match(engine: AsyncEngine, caller: str | None) -> None:
    await make(engine, "Has digits", ["+74951010101"])
    async with engine.begin() as conn:
        # Even a card holding a number whose digits end like an extension must not match it.
        cid = (await conn.execute(sa.select(clients.c.id))).scalar_one()
        await conn.execute(sa.insert(client_phones).values(client_id=cid, e164=None, raw="101", suffix="101"))
    async with engine.connect() as conn:
        assert (await match_number(conn, caller, RU)).client is None


async def test_card_cannot_hold_an_extension(engine: AsyncEngine) -> None:
    with pytest.raises(CardError, match="internal extension"):
        await make(engine, "Operator", ["101"])


@pytest.mark.parametrize(
    ("name", "phones", "message"),
    [
        ("", ["+74951234567"], "name: the name is empty"),
        ("   ", ["+74951234567"], "name is empty"),
        ("Bad", ["not a number"], "not a valid phone number"),
        ("Bad", ["+7 123"], "not a valid phone number"),
        ("Bad", [""], "empty"),
        ("x" * 256, ["+74951234567"], "longer than 255"),
    ],
)
async def test_bad_input_clear_error_nothing_written(
    engine: AsyncEngine, name: str, phones: list[str], message: str
) -> None:
    with pytest.raises(CardError, match=message):
        await make(engine, name, phones)
    async with engine.connect() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(clients))).scalar_one() == 0
        assert (await conn.execute(sa.select(sa.func.count()).select_from(client_phones))).scalar_one() == 0


async def test_bad_email_and_responsible(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        with pytest.raises(CardError, match="e-mail"):
            await cards.create_card(conn, CardInput(name="A", emails=["nope"]), RU, T0)
        with pytest.raises(CardError, match="responsible"):
            await cards.create_card(conn, CardInput(name="A", responsible="ivan"), RU, T0)


async def test_ten_thousand_phones_on_one_card(engine: AsyncEngine) -> None:
    numbers = [f"+7916{i:07d}" for i in range(10_000)]
    started = time.perf_counter()
    cid = await make(engine, "Call centre", numbers)
    elapsed = time.perf_counter() - started
    async with engine.connect() as conn:
        card = await cards.get_card(conn, cid, phones_limit=5)
        assert card is not None and card["phone_count"] == 10_000 and len(card["phones"]) == 5
        assert (await match_number(conn, "+79160009999", RU)).client_id == cid
    assert elapsed < 30
    # One more is refused with a clear error, and the card is unchanged.
    with pytest.raises(CardError, match="at most 10000"):
        async with engine.begin() as conn:
            await cards.add_phones(conn, cid, ["+79990000000"], RU, T0)
    with pytest.raises(CardError, match="at most 10000"):
        await make(engine, "Too many", [*numbers, "+79990000000"])
    async with engine.connect() as conn:
        assert (
            await conn.execute(sa.select(sa.func.count()).select_from(client_phones))
        ).scalar_one() == 10_000


async def test_transaction_rolls_back_a_half_written_card(engine: AsyncEngine) -> None:
    """A failure after the card row is written (here: in a later step of the same transaction)
    leaves nothing behind."""
    with pytest.raises(RuntimeError):
        async with engine.begin() as conn:
            await cards.create_card(conn, CardInput(name="Half", phones=["+74951234567"]), RU, T0)
            raise RuntimeError("crash after the insert")
    async with engine.connect() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(clients))).scalar_one() == 0


async def test_update_card_and_search(engine: AsyncEngine) -> None:
    cid = await make(engine, "Анна Сидорова", ["+74991234567"])
    async with engine.begin() as conn:
        await cards.update_card(
            conn,
            cid,
            CardChanges(
                company="Acme",
                responsible="103",
                tags=["new"],
                add_phones=["8 916 000-00-01"],
                remove_phones=["+74991234567"],
                emails=["anna@example.org"],
            ),
            RU,
            T0,
        )
    async with engine.connect() as conn:
        card = await cards.get_card(conn, cid)
        assert card is not None
        assert [p["e164"] for p in card["phones"]] == ["+79160000001"]
        assert (
            card["company"] == "Acme"
            and card["responsible"] == "103"
            and card["emails"] == ["anna@example.org"]
        )
        # by name, case-insensitive also for Cyrillic; by phone in any format; by company
        assert [c["id"] for c in await cards.search_cards(conn, "анна", RU)] == [cid]
        assert [c["id"] for c in await cards.search_cards(conn, "СИДОРОВА", RU)] == [cid]
        assert [c["id"] for c in await cards.search_cards(conn, "8 (916) 000-00-01", RU)] == [cid]
        assert [c["id"] for c in await cards.search_cards(conn, "acme", RU)] == [cid]
        assert await cards.search_cards(conn, "+74991234567", RU) == []
        with pytest.raises(CardError, match="empty"):
            await cards.search_cards(conn, "  ", RU)
    async with engine.begin() as conn:
        with pytest.raises(CardError, match="name is empty"):
            await cards.update_card(conn, cid, CardChanges(name=""), RU, T0)
        with pytest.raises(CardNotFound):
            await cards.update_card(conn, cid + 100, CardChanges(name="x"), RU, T0)


async def test_routing_responsible_for(engine: AsyncEngine) -> None:
    await make(engine, "With manager", ["+74957654321"], responsible="102")
    await make(engine, "Without", ["+74950000001"])
    async with engine.connect() as conn:
        assert await responsible_for(conn, "84957654321", RU) == "102"
        assert await responsible_for(conn, "+74950000001", RU) is None
        assert await responsible_for(conn, "+74950000002", RU) is None
        assert await responsible_for(conn, "102", RU) is None


def test_tags_and_emails_are_deduplicated_in_linear_time() -> None:
    """Issue 18: 50,000 distinct tags took 17 s (a list's `in` per tag) on the event loop."""
    tags = [f"t{i}" for i in range(50_000)]
    started = time.perf_counter()
    assert cards.clean_tags([*tags, " t1 ", "t0"]) == tags  # order kept, duplicates (trimmed) gone
    emails = [f"u{i}@example.com" for i in range(50_000)]
    assert cards.clean_emails([*emails, "U1@Example.com"]) == emails
    assert time.perf_counter() - started < 2.0  # quadratic: minutes; linear: ~0.1 s
