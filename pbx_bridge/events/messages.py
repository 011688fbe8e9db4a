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
  call.ringing is the screen pop: only a customer's call ringing an operator. Never for the
  operator's own phone rung first by an Originate (click-to-call, the "first leg"), never for an
  internal call: those ringings are `call.updated` with "reason" ("own_call" / "internal") and
  "from_extension" (who is calling). call.ringing also has "ad_channel": the DID's name in
  crm.did_sources (or null).
- call.updated: the call's public record changed while in progress (direction became known,
  the number dialled, ...) or a ringing that is not a screen pop (above).
- task.updated: "task": a task as GET /api/v1/tasks shows it (opened, closed); "audience":
  "operators" when it is the shared call-back group's (every operator sees it).
- client.created: "client": the new card.
- click_to_call.updated: "click_to_call": the request as GET /api/v1/click-to-call/{id} shows it.
- recording.ready: "call_id", "recording": {...} (published by the recordings feature).
- transcript.ready: "call_id", "transcript": {...} (published by the transcription feature).

Other features build their messages with `make_message` so the shape stays one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from pbx_bridge.calls.changes import CallChange
from pbx_bridge.calls.record import CallRecord

TYPES = (
    "call.ringing", "call.answered", "call.transferred", "call.ended", "call.missed",
    "call.updated", "client.created", "click_to_call.updated", "recording.ready",
    "transcript.ready", "task.updated",
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
                 "transferred": "call.transferred", "ended": "call.ended", "updated": "call.updated"}


def origin_extension(record: CallRecord) -> str | None:
    """The operator whose phone started the call (its first leg), if an operator's did."""
    origin = next((leg for leg in record.legs if leg.uniqueid == record.linkedid), None)
    return origin.extension if origin is not None else None


def not_a_pop(change: CallChange) -> str | None:
    """Why a ringing is no screen pop ("own_call", "internal"), or None when it is one: the
    operator's own phone rung by an Originate before it dials (click-to-call's first leg) is
    not a customer calling them, nor is a colleague."""
    record = change.record
    if change.extension is not None and origin_extension(record) == change.extension:
        return "own_call"
    if record.direction == "internal":
        return "internal"
    return None


def call_messages(change: CallChange, ad_channel: str | None = None) -> list[Message]:
    """What one call change tells live clients (nothing for started)."""
    type_ = _KIND_TO_TYPE.get(change.kind)
    if type_ is None:
        return []
    exts = call_extensions(change)
    record = change.record.to_dict()
    if (change.backfilled and change.kind != "ended") or change.record.merged_into is not None:
        # A call rebuilt once it was over: only its end is news; a record merged into another
        # call (attended transfer, pickup) is no call of its own.
        return []
    if change.kind == "ringing":
        reason = not_a_pop(change)
        if reason is not None:
            return [make_message("call.updated", exts, call=record, extension=change.extension,
                                 client=None, reason=reason,
                                 from_extension=origin_extension(change.record))]
        return [make_message(type_, exts, call=record, extension=change.extension,
                             client=change.client, ad_channel=ad_channel)]
    marks = {"backfilled": True} if change.backfilled else {}
    out = [make_message(type_, exts, call=record, extension=change.extension, client=change.client,
                        **marks)]
    if change.kind == "ended" and change.record.missed:
        out.append(make_message("call.missed", exts, call=record, extension=change.extension,
                                client=change.client, **marks))
    return out


def task_message(task: Mapping[str, Any], group: str | None) -> Message:
    """task.updated for the task's people; a shared group's task goes to every operator."""
    shared = bool(group) and task.get("assignee") == group
    message = make_message("task.updated", [] if shared else list(task.get("assignees") or []),
                           task=dict(task))
    if shared:
        message["audience"] = "operators"
    return message


def accepts(message: Message, extension: str | None) -> bool:
    """Whether an operator with `extension` may see the message."""
    if extension is None:
        return False
    return extension in message.get("extensions", ()) or message.get("audience") == "operators"
