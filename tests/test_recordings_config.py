"""The [recordings] section: documented defaults load, bad values are refused with one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from pbx_bridge.config import ConfigError, load_settings
from pbx_bridge.recording.service import locations_from_config, policy_from_config

ROOT = Path(__file__).resolve().parent.parent


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    path = tmp_path / "c.toml"
    path.write_text(text)
    return load_settings(path, environ=environ or {})


def test_shipped_file_and_defaults(tmp_path: Path) -> None:
    settings = load_settings(ROOT / "config" / "pbx-bridge.toml", environ={})
    rec = settings.recordings
    assert (rec.policy, rec.retention_days, rec.compress) == ("all", 90, "none")
    where = locations_from_config(rec, tmp_path)
    assert where.spool_dir == "/var/spool/asterisk/monitor"
    assert where.local_spool_dir == Path("/var/spool/asterisk/monitor")  # same machine by default
    assert where.recordings_dir == tmp_path / "recordings"


def test_overrides_become_the_policy(tmp_path: Path) -> None:
    settings = load(tmp_path, """
[recordings]
policy = "inbound"
retention_days = 30
local_spool_dir = "/mnt/pbx-monitor"
[recordings.did_overrides]
"84951110000" = { record = false }
"+74951113333" = { retention_days = 365 }
[recordings.operator_overrides]
"105" = { record = true, retention_days = 0 }
""", {"PBX_BRIDGE_RECORDINGS__COMPRESS": "opus"})
    assert settings.recordings.compress == "opus"
    policy = policy_from_config(settings.recordings, "RU")
    # DIDs normalized like the call record's DID.
    assert set(policy.did_overrides) == {"+74951110000", "+74951113333"}
    assert policy.did_overrides["+74951110000"].record is False
    assert policy.did_overrides["+74951113333"].retention_days == 365
    assert policy.did_overrides["+74951110000"].retention_days is None  # -1: the default
    assert policy.operator_overrides["105"].retention_days == 0
    assert policy.mode == "inbound" and policy.retention_days == 30
    assert locations_from_config(settings.recordings, tmp_path).local_spool_dir == Path("/mnt/pbx-monitor")


@pytest.mark.parametrize(("text", "message"), [
    ('policy = "sometimes"', "'recordings.policy' must be one of"),
    ("retention_days = -1", "'recordings.retention_days' must be 0"),
    ('retention_days = "90"', "'recordings.retention_days' must be an integer"),
    ("retry_attempts = 0", "'recordings.retry_attempts' must be 1 or more"),
    ("retry_delay_seconds = 0", "'recordings.retry_delay_seconds' must be more than 0"),
    ("link_ttl_seconds = 0", "'recordings.link_ttl_seconds' must be more than 0"),
    ('signing_key = "short"', "'recordings.signing_key' must be at least 16 bytes"),
    ('spool_dir = "/var/spool/a(b)"', "'recordings.spool_dir' may not contain"),
    ('compress = "flac"', "'recordings.compress' must be one of"),
    ("colour = 1", "unknown key 'recordings.colour'"),
    ('did_overrides = { "1" = { record = "yes" } }', "'recordings.did_overrides.1.record' must be true"),
    ('operator_overrides = { "101" = { retention_days = -2 } }',
     "'recordings.operator_overrides.101.retention_days' must be -1, 0 or more"),
    ('operator_overrides = { "101" = { keep = true } }',
     "unknown key 'recordings.operator_overrides.101.keep'"),
])
def test_bad_values_are_refused(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, f"[recordings]\n{text}\n")
    assert message in str(exc.value)


def test_signing_key_file(tmp_path: Path) -> None:
    from pbx_bridge.config import RecordingsConfig
    from pbx_bridge.recording.service import signing_key

    rec = RecordingsConfig()
    first = signing_key(rec, tmp_path / "data")  # created once ...
    assert len(first) == 32 and signing_key(rec, tmp_path / "data") == first  # ... then kept
    assert (tmp_path / "data" / "recording-links.key").stat().st_mode & 0o777 == 0o600
    rec.signing_key = "configured-key-0123456789"
    assert signing_key(rec, tmp_path / "data") == b"configured-key-0123456789"
    for junk in ("not hex at all", "abcd", ""):
        (tmp_path / "data" / "recording-links.key").write_text(junk)
        with pytest.raises(ConfigError, match="not a signing key"):
            signing_key(RecordingsConfig(), tmp_path / "data")
