"""The crm_sync library's options, built from the application's settings (one place)."""

from __future__ import annotations

from crm_sync.connector import ConnectorSettings
from crm_sync.contacts import ContactPolicy
from crm_sync.matching import MatchSettings
from crm_sync.outbox import RetryPolicy
from pbx_bridge.config import Settings


def match_settings(settings: Settings) -> MatchSettings:
    return MatchSettings(
        region=settings.phone.default_region,
        match_digits=settings.crm.match_digits,
        max_extension_length=settings.phone.max_extension_length,
    )


def contact_policy(settings: Settings) -> ContactPolicy:
    crm = settings.crm
    return ContactPolicy(
        inbound=crm.inbound_policy,
        outbound=crm.outbound_policy,
        min_talk_seconds=crm.min_talk_seconds,
        did_sources=dict(crm.did_sources),
    )


def connector_settings(settings: Settings) -> ConnectorSettings:
    crm = settings.crm
    return ConnectorSettings(
        lookup_url=crm.external_lookup_url,
        create_contact_url=crm.external_contact_url,
        call_activity_url=crm.external_call_url,
        field_map=dict(crm.external_fields),
        hmac_secret=crm.external_hmac_secret,
        signature_header=crm.external_signature_header,
        connect_timeout=crm.external_connect_timeout,
        timeout=crm.external_timeout,
    )


def retry_policy(settings: Settings) -> RetryPolicy:
    crm = settings.crm
    return RetryPolicy(
        max_attempts=crm.outbox_max_attempts,
        base_seconds=crm.outbox_retry_base,
        max_seconds=crm.outbox_retry_max,
    )
