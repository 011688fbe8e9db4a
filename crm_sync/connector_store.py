"""What a native CRM connector keeps in the database: its tokens, and the CRM's ids of our calls."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import sqlalchemy as sa

from crm_sync.schema import Db, crm_connector_auth, crm_external_calls

Origin = Literal["register", "click_to_call"]


@dataclass(frozen=True)
class StoredAuth:
    access_token: str | None = None
    refresh_token: str | None = None
    expires_at: datetime | None = None
    application_token: str | None = None
    member_id: str | None = None


async def load_auth(db: Db, connector: str) -> StoredAuth | None:
    row = (await db.execute(sa.select(crm_connector_auth).where(
        crm_connector_auth.c.connector == connector))).first()
    if row is None:
        return None
    return StoredAuth(row.access_token, row.refresh_token, row.expires_at, row.application_token,
                      row.member_id)


async def save_auth(db: Db, connector: str, auth: StoredAuth, now: datetime) -> None:
    values = {"access_token": auth.access_token, "refresh_token": auth.refresh_token,
              "expires_at": auth.expires_at, "application_token": auth.application_token,
              "member_id": auth.member_id, "updated_at": now}
    changed = await db.execute(sa.update(crm_connector_auth)
                               .where(crm_connector_auth.c.connector == connector).values(**values))
    if not changed.rowcount:  # type: ignore[attr-defined]
        await db.execute(sa.insert(crm_connector_auth).values(connector=connector, **values))


async def external_ids(db: Db, connector: str, calls: Iterable[tuple[str, str]]
                       ) -> dict[tuple[str, str], str]:
    """The CRM's id for each (pbx, linkedid) that has one."""
    wanted = set(calls)
    if not wanted:
        return {}
    linkedids = sorted({linkedid for _pbx, linkedid in wanted})
    rows = await db.execute(sa.select(crm_external_calls.c.pbx, crm_external_calls.c.linkedid,
                                      crm_external_calls.c.external_id)
                            .where(crm_external_calls.c.connector == connector,
                                   crm_external_calls.c.linkedid.in_(linkedids)))
    return {(r.pbx, r.linkedid): r.external_id for r in rows if (r.pbx, r.linkedid) in wanted}


async def remember_external_id(db: Db, connector: str, pbx: str, linkedid: str, external_id: str,
                               origin: Origin, now: datetime) -> None:
    """Keep the CRM's id of a call (a repeat with the same call keeps the first one)."""
    exists = (await db.execute(sa.select(crm_external_calls.c.id).where(
        crm_external_calls.c.connector == connector, crm_external_calls.c.pbx == pbx,
        crm_external_calls.c.linkedid == linkedid))).first()
    if exists is None:
        await db.execute(sa.insert(crm_external_calls).values(
            connector=connector, pbx=pbx, linkedid=linkedid, external_id=external_id, origin=origin,
            created_at=now))
