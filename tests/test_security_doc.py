"""SECURITY.md stays true: linked from the README, the AMI rights it quotes are those of
config/asterisk/manager.conf, and the settings and commands it tells operators to use exist."""

from __future__ import annotations

import re
from pathlib import Path

from pbx_bridge.cli import build_parser
from pbx_bridge.config import Settings

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "SECURITY.md").read_text()


def test_linked_from_the_readme() -> None:
    assert "[SECURITY.md](SECURITY.md)" in (ROOT / "README.md").read_text()
    for heading in ("## Reporting a problem", "## Threat model", "## Hardening checklist"):
        assert heading in DOC


def test_ami_rights_quoted_as_configured() -> None:
    conf = (ROOT / "config" / "asterisk" / "manager.conf").read_text()
    flat = " ".join(DOC.split())  # the doc wraps lines anywhere
    for key in ("read", "write"):
        configured = re.search(rf"^{key} = (\S+)$", conf, re.M)
        assert configured is not None
        assert f"{key} = {configured.group(1)}" in flat, key


def test_settings_and_commands_named_exist() -> None:
    settings = Settings()
    for section, key in (("web", "trust_forwarded_proto"), ("web", "cookie_secure"),
                         ("api", "token_cache_seconds"), ("recordings", "link_ttl_seconds"),
                         ("recordings", "signing_key"), ("click_to_call", "extensions"),
                         ("server", "host")):
        assert hasattr(getattr(settings, section), key), (section, key)
        assert key in DOC
    parser = build_parser()
    for command in (["tokens", "revoke", "1"], ["tokens", "list"], ["users", "disable", "x"],
                    ["config", "check"]):
        parser.parse_args(command)  # exits (SystemExit) if the command were gone
        assert " ".join(command[:2]) in DOC
