"""Kommo requests for our calls: the ended call as a call event, an unknown caller as an
incoming lead, and the contact of a ringing number for the screen pop.

`POST /api/v4/calls` (array): direction* (inbound|outbound), duration* (int s), source*, phone*
(searched by its last 10 digits), uniq (our call id), link (the recording: a signed URL of
ours that plays without a token), call_status (see items.CALL_STATUS), call_result (text),
responsible_user_id / created_by (the Kommo user of the operator's extension), created_at (unix).
"If there's no entity with the specified phone number, the call will not be added": so the
contact is looked up first (`GET /api/v4/contacts?query=<digits>&with=leads`; 204 = nothing) and
a caller without one becomes an incoming lead instead (`POST /api/v4/leads/unsorted/sip`:
source_uid*, source_name*, created_at, pipeline_id, metadata {is_call_event_needed, uniq,
duration, service_code, link, phone (who was called), called_at, from (who called)}, and the
contact to create in `_embedded.contacts`), when the new-contact policy says so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from crm_sync.call_media import CallMedia, Missing, RecordingFile, Waiting
from crm_sync.kommo.api import KommoClient, KommoError
from crm_sync.kommo.items import CALL_RESULT, CALL_STATUS, KIND_CALL
from crm_sync.outbox import DeliveryError, NotYet, OutboxItem

log = logging.getLogger("crm_sync.kommo.sender")
MEDIA_POLL_SECONDS = 5.0
MATCH_DIGITS = 10  # Kommo matches phones on their last 10 digits


def digits(number: str | None) -> str:
    return "".join(ch for ch in (number or "") if ch.isdigit())


def _phones(contact: Mapping[str, Any]) -> list[str]:
    out = []
    for field in contact.get("custom_fields_values") or []:
        if isinstance(field, Mapping) and field.get("field_code") == "PHONE":
            out += [str(v.get("value")) for v in field.get("values") or [] if isinstance(v, Mapping)]
    return out


class KommoSender:
    def __init__(self, client: KommoClient, users: Mapping[str, int], media: CallMedia | None, *,
                 source: str, service_code: str, pipeline_id: int | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.client = client
        self.users = dict(users)  # extension -> Kommo user id
        self.extensions = {user: ext for ext, user in self.users.items()}
        self.media = media
        self.source = source
        self.service_code = service_code
        self.pipeline_id = pipeline_id
        self.clock = clock

    async def find_contact(self, phone: str) -> dict[str, Any] | None:
        """The contact whose phone ends like this number (the query matches any field)."""
        wanted = digits(phone)[-MATCH_DIGITS:]
        if not wanted:
            return None
        status, data = await self.client.request("GET", "/api/v4/contacts",
                                                 params={"query": wanted, "with": "leads"})
        if status == 204 or not isinstance(data, Mapping):
            return None
        for contact in (data.get("_embedded") or {}).get("contacts") or []:
            if any(digits(p)[-MATCH_DIGITS:] == wanted for p in _phones(contact)):
                return dict(contact)
        return None

    async def lookup(self, e164: str) -> dict[str, Any] | None:
        """The screen pop's card from Kommo: the contact with its deals."""
        contact = await self.find_contact(e164)
        if contact is None:
            return None
        leads = [{"id": lead.get("id"), "name": lead.get("name"), "price": lead.get("price"),
                  "status_id": lead.get("status_id")}
                 for lead in (contact.get("_embedded") or {}).get("leads") or []]
        return {"name": contact.get("name"), "company": None,
                "responsible": self.extensions.get(contact.get("responsible_user_id")),  # type: ignore[arg-type]
                "kommo": {"contact_id": contact.get("id"), "leads": leads}}

    async def _link(self, item: OutboxItem) -> str | None:
        p = item.payload
        if not p.get("wants_recording") or self.media is None:
            return None
        call_id = int(p["call_id"])
        found = await self.media.recording(call_id)
        if isinstance(found, Waiting):
            deadline = datetime.fromisoformat(p["wait_until"]) if p.get("wait_until") else None
            if deadline is not None and self.clock() < deadline:
                raise NotYet(found.reason, MEDIA_POLL_SECONDS)
            log.warning("crm.kommo.recording_given_up", extra={"kv": {"call_id": call_id,
                                                                      "reason": found.reason}})
            return None
        if isinstance(found, Missing):
            return None
        assert isinstance(found, RecordingFile)
        return self.media.recording_link(call_id)

    async def send(self, item: OutboxItem) -> None:
        if item.kind != KIND_CALL:
            raise DeliveryError(f"the Kommo connector does not send {item.kind!r} items "
                                "(queued for another connector?)", retryable=False)
        p = item.payload
        link = await self._link(item)
        try:
            contact = await self.find_contact(p["phone"])
            if contact is not None:
                await self._call(p, link)
            elif p.get("create_unsorted"):
                await self._unsorted(p, link)
            else:
                log.info("crm.kommo.unknown_caller_skipped", extra={"kv": {"call_id": p.get("call_id")}})
        except KommoError as exc:
            raise DeliveryError(f"Kommo refused it: {exc}", retryable=False) from None

    def _user(self, p: Mapping[str, Any]) -> int | None:
        return self.users.get(str(p.get("operator") or ""))

    async def _call(self, p: Mapping[str, Any], link: str | None) -> None:
        call: dict[str, Any] = {
            "direction": p["direction"], "uniq": p["uniq"], "duration": int(p["duration"]),
            "source": self.source, "phone": p["phone"],
            "call_status": CALL_STATUS.get(p.get("status") or "", 6),
            "call_result": CALL_RESULT.get(p.get("status") or "", str(p.get("status") or "")),
            "created_at": int(p["created_at"]),
        }
        if link:
            call["link"] = link
        user = self._user(p)
        if user is not None:
            call["responsible_user_id"] = user
            call["created_by"] = user
        _status, data = await self.client.request("POST", "/api/v4/calls", body=[call])
        errors = (data or {}).get("errors") if isinstance(data, Mapping) else None
        if errors:
            raise KommoError(400, {"detail": f"the call was not added: {errors}"})

    async def _unsorted(self, p: Mapping[str, Any], link: str | None) -> None:
        inbound = p["direction"] == "inbound"
        ours = str(p.get("did") or p.get("operator") or "")
        metadata: dict[str, Any] = {
            "is_call_event_needed": True, "uniq": p["uniq"], "duration": int(p["duration"]),
            "service_code": self.service_code, "phone": ours if inbound else p["phone"],
            "called_at": int(p["created_at"]), "from": p["phone"] if inbound else ours,
        }
        if link:
            metadata["link"] = link
        lead: dict[str, Any] = {
            "source_uid": p["uniq"], "source_name": self.source, "created_at": int(p["created_at"]),
            "metadata": metadata,
            "_embedded": {"contacts": [{
                "name": p.get("name") or p["phone"],
                "custom_fields_values": [{"field_code": "PHONE",
                                          "values": [{"value": p["phone"], "enum_code": "WORK"}]}],
            }]},
        }
        if self.pipeline_id:
            lead["pipeline_id"] = self.pipeline_id
        user = self._user(p)
        if user is not None:
            lead["_embedded"]["contacts"][0]["responsible_user_id"] = user
        await self.client.request("POST", "/api/v4/leads/unsorted/sip", body=[lead])
