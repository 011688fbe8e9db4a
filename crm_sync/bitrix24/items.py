"""The outbox items of the Bitrix24 connector: one line per call (`b24:call:<our call id>`), so
each call's requests go in order: register, show / hide as operators are rung and one answers,
finish, then the recording and the transcript once they exist.

Payloads hold what the request needs at send time, in our terms (extensions, E.164 numbers,
statuses): the sender maps extensions to Bitrix24 users with the user list of the moment.
`finish` carries the register fields too: a call whose register was never queued (the bridge
died between saving the ringing call and queueing it) is registered on the spot.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

KIND_REGISTER = "b24.register"
KIND_SHOW = "b24.show"
KIND_HIDE = "b24.hide"
KIND_FINISH = "b24.finish"
KIND_RECORD = "b24.record"
KIND_TRANSCRIPT = "b24.transcript"
KINDS = (KIND_REGISTER, KIND_SHOW, KIND_HIDE, KIND_FINISH, KIND_RECORD, KIND_TRANSCRIPT)


def client_key(call_id: int) -> str:
    return f"b24:call:{call_id}"


def call_ref(*, pbx: str, linkedid: str, call_id: int) -> dict[str, Any]:
    return {"pbx": pbx, "linkedid": linkedid, "call_id": call_id}


def register_fields(*, number: str, direction: str, did: str | None, extension: str | None,
                    started_at: datetime, crm_create: bool, show: bool) -> dict[str, Any]:
    return {"number": number, "direction": direction, "did": did, "extension": extension,
            "started_at": started_at.isoformat(), "crm_create": crm_create, "show": show}


def external_call_id(pbx: str, linkedid: str) -> str:
    """EXTERNAL_CALL_ID: the same for every delivery of one call, different for every call."""
    return f"{pbx}:{linkedid}"
