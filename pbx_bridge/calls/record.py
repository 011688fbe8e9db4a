"""The call record: one per customer call, shared by the CLI, the API and the web UI."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

Direction = Literal["inbound", "outbound", "internal", "unknown"]
Status = Literal["answered", "no_answer", "busy", "abandoned", "failed"]
# Where the record came from: the live AMI events, Asterisk's CEL rows alone (the bridge was not
# listening), or both (AMI saw it begin, CEL told how it ended).
Source = Literal["ami", "cel", "ami+cel"]
SOURCES: tuple[Source, ...] = ("ami", "cel", "ami+cel")


@dataclass
class Transfer:
    kind: Literal["blind", "attended", "pickup"]
    at: float  # epoch seconds
    from_operator: str | None
    to_operator: str | None  # for blind transfers to an extension; None when unknown

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "at": iso(self.at),
            "from_operator": self.from_operator,
            "to_operator": self.to_operator,
        }


@dataclass
class Leg:
    uniqueid: str
    channel: str
    role: Literal["operator", "customer", "local", "other"]
    extension: str | None
    created_at: float
    answered_at: float | None = None
    hungup_at: float | None = None
    hangup_cause: str | None = None


@dataclass
class CallRecord:
    pbx: str
    linkedid: str
    started_at: float  # epoch seconds (from the events' Timestamp)
    direction: Direction = "unknown"
    status: Status | None = None  # None while the call is live
    customer_number: str | None = None  # E.164 when it parses
    customer_name: str | None = None
    did: str | None = None  # E.164 of the number the customer dialled (inbound)
    dialled: str | None = None  # what was dialled, as dialled (outbound / internal)
    operator: str | None = None  # who answered (the last one after transfers)
    operators_rung: list[str] = field(default_factory=list)  # in order, no repeats
    queue: str | None = None
    transfers: list[Transfer] = field(default_factory=list)
    answered_at: float | None = None
    ended_at: float | None = None
    click_to_call_id: str | None = None
    legs: list[Leg] = field(default_factory=list)
    ended_during_outage: bool = False
    # Set when this Linkedid's channels joined another call (attended transfer, pickup): the
    # record is then not a call of its own, and the store drops it.
    merged_into: str | None = None
    source: Source = "ami"
    # Set by later stages (database id, CRM match).
    id: int | None = None
    client_id: int | None = None

    @property
    def live(self) -> bool:
        return self.ended_at is None

    @property
    def missed(self) -> bool:
        return self.direction == "inbound" and self.status is not None and self.status != "answered"

    @property
    def wait_seconds(self) -> float | None:
        end = self.answered_at if self.answered_at is not None else self.ended_at
        return None if end is None else round(max(0.0, end - self.started_at), 3)

    @property
    def talk_seconds(self) -> float | None:
        if self.answered_at is None:
            return 0.0 if self.ended_at is not None else None
        if self.ended_at is None:
            return None
        return round(max(0.0, self.ended_at - self.answered_at), 3)

    def to_dict(self) -> dict[str, Any]:
        """The public record shape (ISO 8601 UTC times)."""
        return {
            "id": self.id,
            "pbx": self.pbx,
            "linkedid": self.linkedid,
            "direction": self.direction,
            "status": self.status,
            "missed": self.missed,
            "customer_number": self.customer_number,
            "customer_name": self.customer_name,
            "did": self.did,
            "dialled": self.dialled,
            "operator": self.operator,
            "operators_rung": list(self.operators_rung),
            "queue": self.queue,
            "transfers": [t.to_dict() for t in self.transfers],
            "started_at": iso(self.started_at),
            "answered_at": iso(self.answered_at),
            "ended_at": iso(self.ended_at),
            "wait_seconds": self.wait_seconds,
            "talk_seconds": self.talk_seconds,
            "click_to_call_id": self.click_to_call_id,
            "client_id": self.client_id,
            "source": self.source,
        }


def combine(cel: CallRecord, ami: CallRecord) -> CallRecord:
    """A call AMI saw in part (it began while the bridge listened, ended while it did not) and
    CEL saw whole: CEL's record (the true end, status, who took it), with what only AMI knew
    (the dialplan's DIRECTION and CALL_ID variables, the database id and card)."""
    out = dataclasses.replace(cel, source="ami+cel", id=ami.id if ami.id is not None else cel.id,
                              client_id=ami.client_id if ami.client_id is not None else cel.client_id)
    if ami.direction != "unknown":
        out.direction = ami.direction
    for name in ("customer_number", "customer_name", "did", "dialled", "queue", "click_to_call_id"):
        if getattr(ami, name) is not None:
            setattr(out, name, getattr(ami, name))
    out.operators_rung = [*cel.operators_rung,
                          *(ext for ext in ami.operators_rung if ext not in cel.operators_rung)]
    out.started_at = min(cel.started_at, ami.started_at)
    out.ended_during_outage = False
    return out


RECORD_FIELDS = (
    "id", "pbx", "linkedid", "direction", "status", "missed", "customer_number", "customer_name",
    "did", "dialled", "operator", "operators_rung", "queue", "transfers", "started_at",
    "answered_at", "ended_at", "wait_seconds", "talk_seconds", "click_to_call_id", "client_id",
    "source",
)


def iso(ts: float | datetime | None) -> str | None:
    if ts is None:
        return None
    if isinstance(ts, datetime):
        dt = ts
    else:
        dt = datetime.fromtimestamp(ts, UTC)
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def to_datetime(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)
