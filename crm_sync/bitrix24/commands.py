"""Bitrix24 telephony methods' parameters, built from our calls. Field by field, as documented:

`telephony.externalCall.register` (returns CALL_ID):
  USER_ID (int) or USER_PHONE_INNER (string): one is required: whose call it is (and whose
  screen shows the card); PHONE_NUMBER* (string): the client; TYPE* (int): 1 outgoing, 2 incoming,
  3 incoming with redirection, 4 callback, 5 informational; CALL_START_DATE: ISO-8601 with the
  time zone; CRM_CREATE: 0/1 create a lead for an unknown number; CRM_SOURCE: a STATUS_ID;
  SHOW: 0/1 show the card (default 1); LINE_NUMBER: the external line (telephony.externalLine.*);
  EXTERNAL_CALL_ID: ours, unique per call: a repeated register with the same fields within
  30 minutes returns the same CALL_ID, which makes a repeated delivery harmless.
`telephony.externalCall.show` / `hide`: CALL_ID*, USER_ID (int or array of ints).
`telephony.externalCall.finish`: CALL_ID*, USER_ID (who ends it; becomes responsible for a lead
  the call created), DURATION (int seconds), STATUS_CODE: 200 successful, 304 missed, 603
  declined, 603-S cancelled, 486 busy, 480 temporarily unavailable, 503/484 direction
  unavailable, 404 invalid number, ... (default 200 if DURATION > 0 else 304).
`telephony.externalCall.attachRecord`: CALL_ID*, FILENAME (.wav or .mp3), FILE_CONTENT (base64):
  after finish ("Call is not found in the statistic table" before it). RECORD_URL would make the
  portal download the file, which it refuses for non-public addresses: we upload.
`telephony.call.attachTranscription`: CALL_ID*, MESSAGES*: [{SIDE*: "User" (the employee) or
  "Client", START_TIME* (int >= 0), STOP_TIME* (int > 0), MESSAGE* (not empty)}], after finish.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from crm_sync.call_media import TranscriptTurn

REGISTER = "telephony.externalCall.register"
FINISH = "telephony.externalCall.finish"
SHOW = "telephony.externalCall.show"
HIDE = "telephony.externalCall.hide"
ATTACH_RECORD = "telephony.externalCall.attachRecord"
ATTACH_TRANSCRIPTION = "telephony.call.attachTranscription"
LINE_ADD = "telephony.externalLine.add"
LINE_GET = "telephony.externalLine.get"

TYPE_OUTGOING, TYPE_INCOMING = 1, 2

# Our status -> STATUS_CODE. "abandoned" (the caller hung up while it rang) is a missed call for
# Bitrix24 too; "failed" (no channel, congestion) is a direction that was unavailable.
STATUS_CODES = {"answered": "200", "no_answer": "304", "abandoned": "304", "busy": "486",
                "failed": "503"}


def status_code(status: str | None, talk_seconds: float | None) -> str:
    if status in STATUS_CODES:
        return STATUS_CODES[status]
    return "200" if (talk_seconds or 0) > 0 else "304"


def call_type(direction: str) -> int:
    return TYPE_OUTGOING if direction == "outbound" else TYPE_INCOMING


def line_number(e164: str | None) -> str:
    """An external line's NUMBER: the digits (the docs' form, 79117654321)."""
    return "".join(ch for ch in (e164 or "") if ch.isdigit())


def iso_with_zone(at: datetime) -> str:
    return at.isoformat(timespec="seconds")


def register_params(*, user_id: int, number: str, direction: str, started_at: datetime,
                    crm_create: bool, show: bool, line: str | None, external_call_id: str,
                    crm_source: str | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {
        "USER_ID": user_id,
        "PHONE_NUMBER": number,
        "TYPE": call_type(direction),
        "CALL_START_DATE": iso_with_zone(started_at),
        "CRM_CREATE": 1 if crm_create else 0,
        "SHOW": 1 if show else 0,
        "EXTERNAL_CALL_ID": external_call_id,
    }
    if line:
        params["LINE_NUMBER"] = line
    if crm_source:
        params["CRM_SOURCE"] = crm_source
    return params


def finish_params(*, call_id: str, user_id: int, talk_seconds: float | None, status: str | None
                  ) -> dict[str, Any]:
    return {"CALL_ID": call_id, "USER_ID": user_id, "DURATION": round(talk_seconds or 0),
            "STATUS_CODE": status_code(status, talk_seconds)}


def users_params(call_id: str, user_ids: Iterable[int]) -> dict[str, Any]:
    return {"CALL_ID": call_id, "USER_ID": list(user_ids)}


def transcript_messages(turns: Iterable[TranscriptTurn]) -> list[dict[str, Any]]:
    """Our turns as MESSAGES: the operator is the portal's user, the rest the client; times in
    whole seconds (start rounded down, stop up, so a phrase is never cut), empty text dropped."""
    out = []
    for turn in turns:
        text = " ".join(turn.text.split())
        if not text:
            continue
        start = max(0, math.floor(turn.start))
        stop = max(start + 1, math.ceil(turn.end))
        out.append({"SIDE": "User" if turn.speaker == "operator" else "Client",
                    "START_TIME": start, "STOP_TIME": stop, "MESSAGE": text})
    return out


def transcript_params(call_id: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
    return {"CALL_ID": call_id, "MESSAGES": messages}


def record_params(call_id: str, filename: str, content_base64: str) -> dict[str, Any]:
    return {"CALL_ID": call_id, "FILENAME": filename, "FILE_CONTENT": content_base64}


def external_lines(did_sources: Mapping[str, str]) -> dict[str, str]:
    """DID -> line name, as lines to have in Bitrix24 (NUMBER = the DID's digits)."""
    return {line_number(did): name for did, name in did_sources.items() if line_number(did)}
