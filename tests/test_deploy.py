"""deploy/: the systemd units verified by `systemd-analyze verify` (Debian's systemd; `make test`
installs it when missing) and read for what docs/operations.md promises of them; the Dockerfile and the
compose file read for their conventions (no Docker engine here: they are not built; the wheel
test is what proves the install).

systemd-analyze verify needs the unit's ExecStart binary to exist: the copies checked here run
the project's own `pbx-bridge` (same command, other path); it reports unknown keys and bad values
as warnings with exit code 0, so any line it prints about the units fails the test."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pbx_bridge.assembly import DRAIN_TIMEOUT
from pbx_bridge.cli import build_parser
from tests.e2e_support import ROOT

UNITS = ROOT / "deploy/systemd"
INSTALLED_CLI = "/opt/pbx-bridge/bin/pbx-bridge"
HARDENING = {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
             "PrivateTmp": "yes", "PrivateDevices": "yes", "RestrictSUIDSGID": "yes",
             "CapabilityBoundingSet": ""}


def read_unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read_string(path.read_text())
    return parser


@pytest.mark.parametrize("name, command", [("pbx-bridge.service", "serve"),
                                           ("pbx-bridge-worker.service", "worker")])
def test_units_have_what_a_production_service_needs(name: str, command: str) -> None:
    unit = read_unit(UNITS / name)
    service = unit["Service"]
    assert service["User"] == "pbx-bridge" and service["Group"] == "pbx-bridge"
    assert service["EnvironmentFile"] == "/etc/pbx-bridge/.env"
    assert service["Environment"] == "PBX_BRIDGE_CONFIG=/etc/pbx-bridge/pbx-bridge.toml"
    assert service["Restart"] == "on-failure"
    # A configuration error (exit 2) is not restarted in a loop.
    assert service["RestartPreventExitStatus"] == "2"
    for key, value in HARDENING.items():
        assert service[key] == value, key
    assert service["KillSignal"] == "SIGTERM"
    # The stop timeout leaves the call pipeline its drain time and more.
    assert _seconds(service["TimeoutStopSec"]) >= 2 * DRAIN_TIMEOUT
    assert service["StateDirectory"] == "pbx-bridge"
    # ExecStart runs a command the CLI has.
    exec_start = service["ExecStart"].split()
    assert exec_start == [INSTALLED_CLI, command]
    build_parser().parse_args([command])
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def _seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|min)?", value)
    assert match, value
    return float(match.group(1)) * (60 if match.group(2) == "min" else 1)


def test_systemd_analyze_verify_finds_nothing(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: `make deploy-deps` installs Debian's systemd"
    cli = Path(sys.prefix) / "bin" / "pbx-bridge"
    assert cli.is_file(), cli
    copies = []
    for unit in sorted(UNITS.glob("*.service")):
        copy = tmp_path / unit.name
        copy.write_text(unit.read_text().replace(INSTALLED_CLI, str(cli)))
        copies.append(str(copy))
    assert len(copies) == 2
    done = subprocess.run([analyze, "verify", *copies], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)
    about_units = [line for line in (done.stdout + done.stderr).splitlines()
                   if str(tmp_path) in line or ".service" in line]
    assert done.returncode == 0 and not about_units, done.stdout + done.stderr


def test_systemd_analyze_verify_would_catch_a_mistake(tmp_path: Path) -> None:
    """The check above can fail: a misspelt key and a bad value are reported."""
    analyze = shutil.which("systemd-analyze")
    assert analyze
    cli = Path(sys.prefix) / "bin" / "pbx-bridge"
    text = (UNITS / "pbx-bridge.service").read_text().replace(INSTALLED_CLI, str(cli))
    broken = tmp_path / "pbx-bridge.service"
    broken.write_text(text.replace("ProtectSystem=strict", "ProtectSystem=strictly")
                          .replace("Restart=on-failure", "Restart=on-failure\nRestartt=2"))
    done = subprocess.run([analyze, "verify", str(broken)], capture_output=True, text=True, timeout=60)
    output = done.stdout + done.stderr
    assert "Restartt" in output and "strictly" in output, output


def test_dockerfile_and_compose_are_conventional() -> None:
    dockerfile = (ROOT / "deploy/Dockerfile").read_text()
    lines = [line.strip() for line in dockerfile.splitlines() if line.strip() and not line.startswith("#")]
    assert lines[0].startswith("FROM python:3.11")
    assert "USER pbx-bridge" in lines  # not root
    assert 'ENTRYPOINT ["pbx-bridge"]' in lines and 'CMD ["serve"]' in lines
    assert "STOPSIGNAL SIGTERM" in lines and "VOLUME /var/lib/pbx-bridge" in lines
    assert any("/healthz" in line for line in lines)
    assert "python -m build --wheel" in dockerfile and "config init /etc/pbx-bridge" in dockerfile
    compose = yaml.safe_load((ROOT / "deploy/compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "migrate", "bridge", "worker"}
    assert services["bridge"]["command"] == ["serve"] and services["worker"]["command"] == ["worker"]
    assert services["migrate"]["command"] == ["db", "upgrade"]
    for name in ("bridge", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert services[name]["environment"]["PBX_BRIDGE_DATABASE__URL"].startswith("postgresql+asyncpg://")
        assert services[name]["env_file"] == ".env"
    assert _seconds(services["bridge"]["stop_grace_period"].rstrip("s")) >= 2 * DRAIN_TIMEOUT
    assert services["bridge"]["environment"]["PBX_BRIDGE_TRANSCRIPTION__IN_PROCESS"] == "false"
