"""Every MetaData whose tables the migrations create (the application's and the libraries')."""

from __future__ import annotations

import sqlalchemy as sa

from pbx_bridge.db.schema import metadata as core_metadata
from pbx_bridge.web.schema import metadata as web_metadata


def all_metadata() -> list[sa.MetaData]:
    # Features append their library's MetaData here as they land.
    return [core_metadata, web_metadata]
