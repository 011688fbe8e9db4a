"""The Kommo connector's outbox item: one per ended customer call, in order per caller
(`kommo:<E.164>`), so a caller's calls reach the card in the order they happened."""

from __future__ import annotations

import hashlib

KIND_CALL = "kommo.call"

# Our status -> call_status: 1 left a message, 2 call back later, 3 not available, 4 had a
# conversation, 5 invalid phone number, 6 no connection (nobody answered), 7 the line is busy.
CALL_STATUS = {"answered": 4, "no_answer": 6, "abandoned": 6, "busy": 7, "failed": 3}
CALL_RESULT = {"answered": "answered", "no_answer": "no answer", "abandoned": "caller hung up",
               "busy": "busy", "failed": "failed"}


def client_key(e164: str | None, number: str | None, call_id: int) -> str:
    if e164:
        return f"kommo:{e164}"
    if number:  # as it came (a number the phone library rejects): hashed to fit the key column
        return "kommo:n:" + hashlib.sha256(number.encode()).hexdigest()[:32]
    return f"kommo:call:{call_id}"
