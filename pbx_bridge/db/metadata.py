"""Every MetaData whose tables the migrations create (the application's and the libraries')."""

from __future__ import annotations

import sqlalchemy as sa

from crm_sync.schema import metadata as crm_metadata
from pbx_bridge.auth.schema import metadata as api_metadata
from pbx_bridge.db.schema import metadata as core_metadata
from pbx_bridge.web.schema import metadata as web_metadata
from recordings.schema import metadata as recordings_metadata
from recordings.transcription.schema import metadata as transcription_metadata


def all_metadata() -> list[sa.MetaData]:
    # One per line, in migration order; features add theirs as they land.
    return [
        core_metadata,
        crm_metadata,
        api_metadata,
        recordings_metadata,
        transcription_metadata,
        web_metadata,
    ]
