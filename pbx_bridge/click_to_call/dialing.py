"""What the PBX is asked to dial for a customer's E.164 number, and the Originate fields."""

from __future__ import annotations

from typing import Any, Literal

import phonenumbers

from crm_sync.phones import digits


def dial_string(e164: str, region: str, fmt: Literal["national", "e164"]) -> str:
    """"+79035550199" -> "89035550199" (national: as dialled from `region`) or the E.164."""
    if fmt == "e164":
        return e164
    number = phonenumbers.parse(e164, None)
    # From the home region this is the national form with its trunk prefix (8 in Russia);
    # abroad, the international prefix (810 from Russia, 00 elsewhere) and the country code.
    return digits(phonenumbers.format_out_of_country_calling_number(number, region))


def originate_fields(*, operator_channel: str, context: str, dial: str, extension: str,
                     channel_id: str, request_id: str, ring_seconds: float) -> dict[str, Any]:
    """As in the click_to_call trace: the operator's phone first, then `dial` in `context`.

    `__CALL_ID` (inherited by every channel of the call) makes the call record carry the
    request id as click_to_call_id; `ChannelId` makes the operator leg's Uniqueid and the
    call's Linkedid equal to `channel_id`, so events tie back to the request.
    """
    return {
        "Action": "Originate",
        "Channel": operator_channel,
        "Context": context,
        "Exten": dial,
        "Priority": "1",
        "CallerID": f"<{extension}>",
        "Timeout": str(int(ring_seconds * 1000)),
        "ChannelId": channel_id,
        "Variable": [f"__CALL_ID={request_id}"],
    }
