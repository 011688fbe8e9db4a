"""`GET /api/v1/calls/{id}/transcript`: the call's transcript and its transcription job's state."""

from __future__ import annotations

import sqlalchemy as sa
from aiohttp import web

from pbx_bridge.db.schema import calls
from pbx_bridge.http.auth import require
from pbx_bridge.http.errors import ApiError
from recordings.transcription.jobs import latest_job_for_call
from recordings.transcription.store import load_transcript


def setup(app: web.Application) -> None:
    app.router.add_get(r"/api/v1/calls/{id:\d+}/transcript", get_transcript)


async def get_transcript(request: web.Request) -> web.Response:
    from pbx_bridge.http.app import RUNTIME  # http.app imports this module to register it

    who = require(request, "manager", "crm", "operator")
    text = request.match_info["id"]
    if len(text) > 18:  # beyond any database integer
        raise ApiError(404, "not_found", "no such call")
    call_id = int(text)
    runtime = request.app[RUNTIME]
    async with runtime.engine.connect() as conn:
        operator = (await conn.execute(sa.select(calls.c.operator).where(calls.c.id == call_id))).first()
        if operator is None:
            raise ApiError(404, "not_found", "no such call")
        if who.role == "operator" and (who.extension is None or operator.operator != who.extension):
            raise ApiError(403, "forbidden", "operators may read only their own calls")
        job = await latest_job_for_call(conn, call_id)
        transcript = await load_transcript(conn, call_id)
    return web.json_response({
        "call_id": call_id,
        # null when no job was ever queued for this call
        "job": job.to_dict() if job is not None else None,
        "transcript": transcript.to_dict() if transcript is not None else None,
    })
