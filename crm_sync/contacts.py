"""New contacts: a call from (or to) a number without a card creates one, as the policy says.

Exactly one card per new number however many calls race: the card's number is claimed in
`phone_claims` (primary key) in the same transaction; the loser's transaction fails on the
constraint and `run_claiming` runs it again, when the match finds the winner's card.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from crm_sync import phones
from crm_sync.cards import Card, CardInput, create_card_returning
from crm_sync.matching import Match, MatchSettings, match_number
from crm_sync.schema import Db, phone_claims

Policy = Literal["every", "answered", "min_talk", "never"]
POLICIES: tuple[Policy, ...] = ("every", "answered", "min_talk", "never")
T = TypeVar("T")


@dataclass(frozen=True)
class ContactPolicy:
    inbound: Policy = "every"
    outbound: Policy = "answered"
    min_talk_seconds: float = 10.0
    # DID (any format) -> ad channel name written as the card's source.
    did_sources: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CallFacts:
    """What crm_sync needs to know about a call (the application maps its record onto this)."""

    call_id: int | None
    direction: str  # inbound | outbound | internal | unknown
    status: str | None  # answered | no_answer | busy | abandoned | failed
    customer_number: str | None
    customer_name: str | None
    did: str | None
    operator: str | None
    started_at: datetime
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    wait_seconds: float | None = None
    talk_seconds: float | None = None
    pbx: str | None = None
    linkedid: str | None = None

    @property
    def answered(self) -> bool:
        return self.status == "answered"

    @property
    def missed(self) -> bool:
        return self.direction == "inbound" and self.status is not None and self.status != "answered"


@dataclass(frozen=True)
class Resolution:
    client_id: int | None
    created: bool
    ambiguous: bool
    e164: str | None
    match: Match | None = None
    card: Card | None = None  # the card, when this call created it


def should_create(policy: ContactPolicy, facts: CallFacts) -> bool:
    if facts.direction == "inbound":
        rule = policy.inbound
    elif facts.direction == "outbound":
        rule = policy.outbound
    else:
        return False  # internal calls have no customer
    if rule == "every":
        return True
    if rule == "answered":
        return facts.answered
    if rule == "min_talk":
        return facts.answered and (facts.talk_seconds or 0.0) >= policy.min_talk_seconds
    return False


def source_for_did(did: str | None, did_sources: Mapping[str, str], region: str) -> str | None:
    """The ad channel a DID belongs to; the map's keys may be written in any format."""
    if not did:
        return None
    target = phones.normalize(did, region) or did
    for key, channel in did_sources.items():
        if key == did or (phones.normalize(key, region) or key) == target:
            return channel
    return None


def card_name(facts: CallFacts, e164: str) -> str:
    name = " ".join((facts.customer_name or "").split())
    # Asterisk's placeholders for "no name" are not names.
    if name and name.lower() not in ("<unknown>", "unknown", "anonymous") and name != facts.customer_number:
        return name
    return phones.format_national(e164)


async def resolve_or_create(
    db: Db, facts: CallFacts, policy: ContactPolicy, settings: MatchSettings, now: datetime
) -> Resolution:
    """The call's card: matched, or created (and claimed) when the policy says so.

    Raises sqlalchemy IntegrityError when a concurrent call claimed the number first: run it
    inside `run_claiming`, which retries the whole transaction.
    """
    match = await match_number(db, facts.customer_number, settings)
    if match.client is not None:
        return Resolution(match.client_id, False, match.ambiguous, match.e164, match)
    if match.e164 is None or not should_create(policy, facts):
        return Resolution(None, False, False, match.e164, match)
    card = CardInput(
        name=card_name(facts, match.e164),
        phones=[match.e164],
        responsible=facts.operator if facts.answered else None,
        source=source_for_did(facts.did, policy.did_sources, settings.region)
        if facts.direction == "inbound"
        else None,
    )
    created = await create_card_returning(db, card, settings, now, auto_created=True)
    client_id = created["id"]
    await db.execute(sa.insert(phone_claims).values(e164=match.e164, client_id=client_id, claimed_at=now))
    return Resolution(client_id, True, False, match.e164, match, created)


async def run_claiming(
    engine: AsyncEngine, work: Callable[[AsyncConnection], Awaitable[T]], attempts: int = 3
) -> T:
    """Run `work` in a transaction; when a unique constraint (a claim) fails, run it again."""
    for attempt in range(1, attempts + 1):
        try:
            async with engine.begin() as conn:
                return await work(conn)
        except sa.exc.IntegrityError:
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")  # pragma: no cover
