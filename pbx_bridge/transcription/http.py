"""`GET /api/v1/calls/{id}/transcript`: the call's transcript and its transcription job's state;
and the call detail's `transcript` part (GET /api/v1/calls/{id}) through the calls API's
enricher extension point."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncConnection

from pbx_bridge.calls.query import get_call, took_part
from pbx_bridge.http.app_keys import RUNTIME
from pbx_bridge.http.auth import require
from pbx_bridge.http.errors import ApiError
from pbx_bridge.http.params import path_id
from recordings.transcription.jobs import latest_job_for_call
from recordings.transcription.store import load_transcript

MAX_CALL_ID = 2**31 - 1
# runtime.services key of the calls API's detail enrichers (pbx_bridge.calls.enrich.SERVICE_KEY).
ENRICHERS_KEY = "call_enrichers"


def setup(app: web.Application) -> None:
    app.router.add_get(r"/api/v1/calls/{id:[0-9]+}/transcript", get_transcript)
    enrichers = app[RUNTIME].services.setdefault(ENRICHERS_KEY, [])
    if transcript_enricher not in enrichers:
        enrichers.append(transcript_enricher)


async def transcript_enricher(conn: AsyncConnection, record: Any, _detail: dict[str, Any]) -> dict[str, Any]:
    """The call detail's `transcript`: null when the call was never queued, else the job's state
    and, once done, the text and analytics (the turns are at .../transcript)."""
    call_id = getattr(record, "id", None)
    if call_id is None:
        return {"transcript": None}
    return {"transcript": await transcript_summary(conn, int(call_id))}


async def transcript_summary(conn: AsyncConnection, call_id: int) -> dict[str, Any] | None:
    job = await latest_job_for_call(conn, call_id)
    transcript = await load_transcript(conn, call_id)
    if job is None and transcript is None:
        return None
    summary: dict[str, Any] = {
        "state": job.state if job is not None else "done",
        "job": job.to_dict() if job is not None else None,
        "url": f"/api/v1/calls/{call_id}/transcript",
        "language": None, "text": None, "analytics": None,
    }
    if transcript is not None:
        summary.update(language=transcript.language, text=transcript.plain_text,
                       analytics=transcript.analytics)
    return summary


async def get_transcript(request: web.Request) -> web.Response:
    who = require(request, "manager", "crm", "operator")
    call_id = path_id(request, "call")
    runtime = request.app[RUNTIME]
    async with runtime.engine.connect() as conn:
        record = await get_call(conn, call_id)
        # The call endpoint's rule and answer: another operator's call is "no such call" (a 403
        # would tell that it exists).
        if record is None or (who.role == "operator" and not took_part(record, who.extension or "")):
            raise ApiError(404, "not_found", "no such call")
        if who.role == "operator" and record.operator != who.extension:
            # A call that rang them (they see the call) but another answered: not their words.
            raise ApiError(403, "forbidden", "operators may read only the transcripts of calls they answered")
        job = await latest_job_for_call(conn, call_id)
        transcript = await load_transcript(conn, call_id)
    return web.json_response({
        "call_id": call_id,
        # null when no job was ever queued for this call
        "job": job.to_dict() if job is not None else None,
        "transcript": transcript.to_dict() if transcript is not None else None,
    })
