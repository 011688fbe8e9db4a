"""The one shape of every live event published on runtime.bus and sent to WebSocket/SSE clients.

    {
      "type": "call.ringing",          # see TYPES
      "at": "2026-11-26T21:54:50.276Z", # when the bridge published it (UTC)
      "extensions": ["101"],           # operators concerned: an operator token only receives
                                       # messages whose list holds its extension ([] = nobody's)
      ...payload                       # per type, below
    }

Payloads:
- call.ringing / call.answered / call.ended / call.missed / call.transferred:
  "call": CallRecord.to_dict(), "extension": the operator rung / who answered (or null),
  "client": the matched client card (call.ringing: the screen pop; null for an unknown caller).
  call.ended / call.missed of a call rebuilt from CEL once it was over (the bridge was not
  listening) also carry "backfilled": true; such a call never has a call.ringing.
- client.created: "client": the new card.
- click_to_call.updated: "click_to_call": the request as GET /api/v1/click-to-call/{id} shows it.
- recording.ready: "call_id", "recording": {...} (published by the recordings feature).
- transcript.ready: "call_id", "transcript": {...} (published by the transcription feature).

Other features build their messages with `make_message` so the shape stays one.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from pbx_bridge.calls.changes import CallChange

TYPES = (
    "call.ringing", "call.answered", "call.transferred", "call.ended", "call.missed",
    "client.created", "click_to_call.updated", "recording.ready", "transcript.ready",
)

Message = dict[str, Any]


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def make_message(type_: str, extensions: Iterable[str | None] = (), **payload: Any) -> Message:
    if type_ not in TYPES:
        raise ValueError(f"unknown live event type {type_!r}")
    exts = sorted({e for e in extensions if e})
    return {"type": type_, "at": now_iso(), "extensions": exts, **payload}


def call_extensions(change: CallChange) -> list[str | None]:
    record = change.record
    return [change.extension, record.operator, *record.operators_rung]


_KIND_TO_TYPE = {"ringing": "call.ringing", "answered": "call.answered",
                 "transferred": "call.transferred", "ended": "call.ended"}


def call_messages(change: CallChange) -> list[Message]:
    """What one call change tells live clients (nothing for started / updated)."""
    type_ = _KIND_TO_TYPE.get(change.kind)
    if type_ is None:
        return []
    exts = call_extensions(change)
    record = change.record.to_dict()
    marks = {"backfilled": True} if change.backfilled else {}
    out = [make_message(type_, exts, call=record, extension=change.extension, client=change.client,
                        **marks)]
    if change.kind == "ended" and change.record.missed:
        out.append(make_message("call.missed", exts, call=record, extension=change.extension,
                                client=change.client, **marks))
    return out


def accepts(message: Message, extension: str | None) -> bool:
    """Whether an operator with `extension` may see the message."""
    return extension is not None and extension in message.get("extensions", ())
