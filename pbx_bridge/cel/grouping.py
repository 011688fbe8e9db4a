"""CEL rows grouped into calls: the rows of every Linkedid that belongs to one customer call.

Most calls are one Linkedid. A channel that starts a call of its own and then joins another
(a pickup's phone, a consultation call joined by an attended transfer) first writes rows under
its own Linkedid, then under the call's; PICKUP and *TRANSFER rows name the channels they
joined. Those Linkedids are one group, replayed together, so the tracker merges them as it does
from AMI.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pbx_bridge.cel.rows import CelRow

# Keys of `extra` that name another channel's Uniqueid (PICKUP, ATTENDEDTRANSFER, BLINDTRANSFER).
LINKING_KEYS = ("pickup_channel_uniqueid", "channel2_uniqueid", "transferee_channel_uniqueid",
                "transfer_target_channel_uniqueid")


class _Union:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, key: str) -> str:
        parent = self.parent.setdefault(key, key)
        if parent == key:
            return key
        root = self.find(parent)
        self.parent[key] = root
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra


def linked_uniqueids(row: CelRow) -> list[str]:
    """Uniqueids of other channels a row names (in `extra`)."""
    if row.eventtype not in ("PICKUP", "ATTENDEDTRANSFER", "BLINDTRANSFER"):
        return []
    extra = row.extra_json()
    return [str(extra[k]) for k in LINKING_KEYS if extra.get(k)]


def group_calls(rows: Iterable[CelRow]) -> list[list[CelRow]]:
    """Rows -> one list per call (in event order), calls in the order their first row came."""
    ordered = sorted(rows, key=lambda r: (r.eventtime, r.id))
    union = _Union()
    linkedid_of_uid: dict[str, str] = {}
    pending: list[tuple[str, str]] = []  # (linkedid, uniqueid named in extra)
    for row in ordered:
        union.find(row.linkedid)
        first = linkedid_of_uid.setdefault(row.uniqueid, row.linkedid)
        if first != row.linkedid:
            union.union(first, row.linkedid)
        pending.extend((row.linkedid, uid) for uid in linked_uniqueids(row))
    for linkedid, uid in pending:
        other = linkedid_of_uid.get(uid)
        if other is not None:
            union.union(linkedid, other)
    groups: dict[str, list[CelRow]] = {}
    for row in ordered:
        groups.setdefault(union.find(row.linkedid), []).append(row)
    return list(groups.values())


def missing_channels(rows: Sequence[CelRow]) -> set[str]:
    """Uniqueids the rows refer to whose beginning or end they lack: those channels wrote rows
    under another Linkedid (a pickup's phone starts as a call of its own, then joins the
    customer's; its first call ends while the channel lives on). Their rows make the call whole."""
    started = {r.uniqueid for r in rows if r.eventtype == "CHAN_START"}
    ended = {r.uniqueid for r in rows if r.eventtype in ("CHAN_END", "HANGUP")}
    wanted = {r.uniqueid for r in rows} | {uid for r in rows for uid in linked_uniqueids(r)}
    return (wanted - started) | (wanted - ended)
