"""The one MetaData every feature of pbx_bridge declares its tables on.

Here in the core so that a feature's schema module imports only this (never another feature's
MetaData): pbx_bridge.db.schema (calls, legs, journal, standby lease), auth, click_to_call and web
each put their tables on it. The libraries (crm_sync, recordings) never import pbx_bridge and keep
their own MetaData; pbx_bridge.all_tables gathers everything the migrations create.
"""

from __future__ import annotations

import sqlalchemy as sa

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING)
