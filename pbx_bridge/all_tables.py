"""Every table the migrations create: the shared MetaData with each feature's tables declared on it,
and the libraries' own MetaData. Above the features (it imports each one's schema module), so
that nothing in the core imports a feature; the migration tests compare this with the database.
"""

from __future__ import annotations

import sqlalchemy as sa

# Importing a feature's schema module declares its tables on the shared MetaData.
import pbx_bridge.auth.schema
import pbx_bridge.click_to_call.schema
import pbx_bridge.db.schema
import pbx_bridge.web.schema  # noqa: F401
from crm_sync.schema import metadata as crm_metadata
from pbx_bridge.db.metadata import metadata
from recordings.schema import metadata as recordings_metadata
from recordings.transcription.schema import metadata as transcription_metadata


def all_metadata() -> list[sa.MetaData]:
    # The application's one MetaData, then the libraries' (which never import pbx_bridge).
    return [metadata, crm_metadata, recordings_metadata, transcription_metadata]
