"""Policy decisions, Asterisk versions and MixMonitor actions, Range parsing, signed links."""

from __future__ import annotations

import pytest

from recordings import mixmonitor, signing
from recordings.playback import RangeNotSatisfiable, parse_range
from recordings.policy import Override, Policy, decide, retention_days_for
from recordings.storage import UnsafePath, resolve_stored, stored_relpath


@pytest.mark.parametrize(("mode", "direction", "expected"), [
    ("all", "inbound", True), ("all", "outbound", True), ("all", "internal", True),
    ("inbound", "inbound", True), ("inbound", "outbound", False),
    ("outbound", "outbound", True), ("outbound", "inbound", False),
    ("none", "inbound", False), ("none", "outbound", False),
])
def test_policy_modes(mode: str, direction: str, expected: bool) -> None:
    policy = Policy(mode=mode)  # type: ignore[arg-type]
    decision = decide(policy, answered=True, direction=direction, did=None, operator="101")
    assert decision.record is expected
    assert decision.rule == "default"


def test_unanswered_calls_are_never_recorded() -> None:
    policy = Policy(mode="all", operator_overrides={"101": Override(record=True)})
    assert not decide(policy, answered=False, direction="inbound", did=None, operator="101").record


def test_overrides_operator_beats_did_beats_mode() -> None:
    policy = Policy(
        mode="none", retention_days=30,
        did_overrides={"+74951110000": Override(record=True, retention_days=365)},
        operator_overrides={"105": Override(record=False), "106": Override(record=True)},
    )
    d = decide(policy, answered=True, direction="inbound", did="+74951110000", operator="101")
    assert (d.record, d.rule, d.retention_days) == (True, "did:+74951110000", 365)
    d = decide(policy, answered=True, direction="inbound", did="+74951110000", operator="105")
    assert (d.record, d.rule) == (False, "operator:105")
    d = decide(policy, answered=True, direction="outbound", did=None, operator="106")
    assert (d.record, d.rule, d.retention_days) == (True, "operator:106", 30)
    assert retention_days_for(policy, "did:+74951110000") == 365
    assert retention_days_for(policy, "operator:106") == 30
    assert retention_days_for(policy, "did:+70000000000") == 30  # rule since removed: default
    assert retention_days_for(policy, "garbage") == 30


def test_policy_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="mode"):
        Policy(mode="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="retention"):
        Policy(retention_days=-1)
    with pytest.raises(ValueError, match="retention"):
        Policy(did_overrides={"1": Override(retention_days=-5)})


@pytest.mark.parametrize(("version", "stereo"), [
    ("22.10.1", True), ("22.1.0", True), ("22.0.0", False), ("21.6.0", True), ("21.5.9", False),
    ("20.11.0", True), ("20.10.3", False), ("20.11.0-rc1", True), ("23.0.0", True),
    ("18.26.0", False), ("16.30.1", False), ("certified/20.7-cert5", False),
    ("GIT-master-1a2b3c", True), ("Asterisk 22.10.1 built by root", True), ("", False),
    ("banana", False),
])
def test_stereo_support_by_version(version: str, stereo: bool) -> None:
    assert mixmonitor.supports_stereo(version) is stereo


def test_parse_version() -> None:
    assert mixmonitor.parse_version("22.10.1") == (22, 10, 1)
    assert mixmonitor.parse_version("certified/20.7-cert1") == (20, 7, 0)
    assert mixmonitor.parse_version("20.11") == (20, 11, 0)
    assert mixmonitor.parse_version("20.9.0") < mixmonitor.parse_version("20.11.0")
    with pytest.raises(mixmonitor.VersionError):
        mixmonitor.parse_version("no digits")


def test_mixmonitor_actions_match_the_trace() -> None:
    seg = mixmonitor.plan_segment("519141ac-8349-46c7-8bc2-db8cbc411c84", 1, stereo=True,
                                  channel="Local/101@operators-00000005;1", operator="101", started_at=1.0)
    # Exactly what the trace's client sent (relative file: Asterisk's monitor dir).
    assert mixmonitor.mixmonitor_action(seg, "") == {
        "Action": "MixMonitor", "Channel": "Local/101@operators-00000005;1",
        "File": "519141ac-8349-46c7-8bc2-db8cbc411c84.raw", "Options": "bD"}
    assert mixmonitor.mixmonitor_action(seg, "/var/spool/asterisk/monitor/")["File"] == (
        "/var/spool/asterisk/monitor/519141ac-8349-46c7-8bc2-db8cbc411c84.raw")
    second = mixmonitor.plan_segment("pbx-1795731456.0", 2, stereo=True, channel="PJSIP/102-00000003",
                                     operator="102", started_at=2.0)
    assert second.files == {"stereo": "pbx-1795731456.0.s2.raw"}
    legs = mixmonitor.plan_segment("pbx-1795731456.0", 1, stereo=False, channel="PJSIP/101-00000001",
                                   operator="101", started_at=1.0)
    action = mixmonitor.mixmonitor_action(legs, "/spool")
    assert action == {
        "Action": "MixMonitor", "Channel": "PJSIP/101-00000001", "File": "/spool/pbx-1795731456.0.mix.raw",
        "Options": "br(/spool/pbx-1795731456.0.rx.raw)t(/spool/pbx-1795731456.0.tx.raw)"}
    assert mixmonitor.stop_action("PJSIP/101-00000001") == {
        "Action": "StopMixMonitor", "Channel": "PJSIP/101-00000001"}
    assert mixmonitor.Segment.from_dict(legs.to_dict()) == legs
    with pytest.raises(ValueError):
        mixmonitor.mixmonitor_action(legs, "/spool(x)")


def test_file_names_from_odd_linkedids_stay_plain() -> None:
    assert mixmonitor.safe_file_stem("../../etc/passwd") == "_.._etc_passwd"
    assert "/" not in mixmonitor.safe_file_stem("a/b\\c d")
    with pytest.raises(ValueError):
        mixmonitor.safe_file_stem("...")


def test_stored_paths(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime, timedelta, timezone

    when = datetime(2026, 11, 26, 23, 30, tzinfo=timezone(timedelta(hours=-3)))
    assert stored_relpath(42, when) == "2026/11/27/42.wav"  # the UTC date
    assert stored_relpath(7, datetime(2026, 1, 2, tzinfo=UTC)) == "2026/01/02/7.wav"
    for bad in (0, -1, True):
        with pytest.raises(ValueError):
            stored_relpath(bad, when)
    assert resolve_stored(tmp_path, "2026/01/02/7.wav") == (tmp_path / "2026/01/02/7.wav").resolve()
    for evil in ("../x.wav", "/etc/passwd", "2026/../../x", ""):
        with pytest.raises(UnsafePath):
            resolve_stored(tmp_path, evil)


@pytest.mark.parametrize(("header", "expected"), [
    ("bytes=0-99", (0, 99)), ("bytes=100-199", (100, 199)), ("bytes=-100", (900, 999)),
    ("bytes=900-", (900, 999)), ("bytes=0-", (0, 999)), ("bytes=990-5000", (990, 999)),
    ("bytes=-5000", (0, 999)), ("BYTES = 5-5", (5, 5)), ("bytes=999-999", (999, 999)),
])
def test_range_parsing(header: str, expected: tuple[int, int]) -> None:
    r = parse_range(header, 1000)
    assert r is not None and (r.start, r.end) == expected
    assert r.content_range == f"bytes {expected[0]}-{expected[1]}/1000"
    assert r.length == expected[1] - expected[0] + 1


@pytest.mark.parametrize("header", [
    "bytes=1000-", "bytes=2000-3000", "bytes=-0", "bytes=5-1", "bytes=abc", "bytes=-", "items=0-5",
    "bytes", "bytes=1-2-3", "bytes=--5",
])
def test_unsatisfiable_ranges(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable) as exc:
        parse_range(header, 1000)
    assert exc.value.content_range == "bytes */1000"


def test_no_range_or_several_ranges_mean_the_whole_file() -> None:
    assert parse_range(None, 10) is None
    assert parse_range("", 10) is None
    assert parse_range("bytes=0-1,5-6", 10) is None


KEY = b"k" * 32


def test_signed_links() -> None:
    link = signing.sign(KEY, 42, now=1000.0, ttl_seconds=60)
    assert link.expires_at == 1060
    # The signature as computed outside signing.py (HMAC-SHA256 over the purpose tag, NUL, then
    # "<call id>.<expiry>"; base64url without padding):
    #   printf 'pbx-bridge recording v1\x0042.1060' | openssl dgst -sha256 -hmac "$(printf 'k%.0s' {1..32})" \
    #     -binary | base64 | tr '+/' '-_' | tr -d '='
    assert link.token == "42.1060.nJnImRlheI94ggStPS1xIk3llJNaiW5zxTMcmj2FwcA"
    assert signing.verify(KEY, "42.1060.nJnImRlheI94ggStPS1xIk3llJNaiW5zxTMcmj2FwcA", now=1000.0) == 42
    assert signing.verify(KEY, link.token, now=1059.9) == 42
    with pytest.raises(signing.TokenError) as exc:
        signing.verify(KEY, link.token, now=1060.0)
    assert exc.value.reason == "expired"
    call, expires, sig = link.token.split(".")
    for tampered in (f"43.{expires}.{sig}", f"{call}.{int(expires) + 3600}.{sig}",
                     f"{call}.{expires}.{sig[:-1]}{'A' if sig[-1] != 'A' else 'B'}"):
        with pytest.raises(signing.TokenError) as exc:
            signing.verify(KEY, tampered, now=1000.0)
        assert exc.value.reason == "bad_signature"
    with pytest.raises(signing.TokenError) as exc:
        signing.verify(b"x" * 32, link.token, now=1000.0)
    assert exc.value.reason == "bad_signature"
    for junk in ("", "42", "42.1060", "../../etc/passwd", f"0.{expires}.{sig}", f"{call}.{expires}.{sig}=",
                 f"-1.{expires}.{sig}"):
        with pytest.raises(signing.TokenError) as exc:
            signing.verify(KEY, junk, now=1000.0)
        assert exc.value.reason == "malformed"
    with pytest.raises(ValueError):
        signing.sign(b"short", 1, now=0, ttl_seconds=1)


def test_which_channel_is_recorded() -> None:
    from pbx_bridge.calls.record import CallRecord, Leg
    from pbx_bridge.recording.service import customer_channel, operator_channel

    rec = CallRecord("main", "x", 0.0, legs=[
        Leg("1", "PJSIP/trunk-1", "customer", None, 0.0, answered_at=2.0),
        Leg("2", "PJSIP/101-1", "operator", "101", 0.5, answered_at=2.0, hungup_at=3.0),
        Leg("3", "PJSIP/102-1", "operator", "102", 0.6),  # rang, still up, never answered
        Leg("4", "PJSIP/101-2", "operator", "101", 4.0, answered_at=5.0),
    ])
    assert operator_channel(rec, "101").channel == "PJSIP/101-2"  # type: ignore[union-attr]
    # An outbound caller leg may not be marked answered yet: still up is enough.
    assert operator_channel(rec, "102").channel == "PJSIP/102-1"  # type: ignore[union-attr]
    assert operator_channel(rec, "103") is None
    assert customer_channel(rec).channel == "PJSIP/trunk-1"  # type: ignore[union-attr]
    rec.legs[0].hungup_at = 9.0
    assert customer_channel(rec) is None
