"""deploy/grafana/pbx-bridge.json and deploy/prometheus/alerts.yml against a running bridge:
every metric they name is on its /metrics, with the labels and label values they select on; the
alert rules pass promtool's check and its unit tests (deploy/prometheus/alerts.test.yml)."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import sys
import time
import uuid
from pathlib import Path

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import _pg_admin, _pg_url
from tests.e2e_support import ROOT, cli_env, free_port, run_cli, start_serve

pytestmark = pytest.mark.timeout(180)

DASHBOARD = ROOT / "deploy/grafana/pbx-bridge.json"
ALERTS = ROOT / "deploy/prometheus/alerts.yml"
# Series Prometheus makes itself when it scrapes: not the bridge's to export.
PROMETHEUS_OWN = {"up"}
SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}")
METRIC = re.compile(r"\bpbx_bridge_[a-z0-9_]+")
MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"')


def promtool() -> str:
    found = Path(sys.prefix) / "promtool" / "usr" / "bin" / "promtool"
    if found.is_file():
        return str(found)
    on_path = shutil.which("promtool")
    assert on_path, "promtool is missing: `make deploy-deps` unpacks it into the virtualenv"
    return on_path


def expressions() -> dict[str, str]:
    """Every PromQL expression of the dashboard and the rules, by where it is."""
    found = {}
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel["targets"]:
            found[f"dashboard: {panel['title']} {target['refId']}"] = target["expr"]
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            found[f"alert: {rule['alert']}"] = rule["expr"]
    return found


def test_the_alert_rules_pass_promtool_and_fire_as_tested() -> None:
    checked = _run_promtool("check", "rules", str(ALERTS))
    assert "SUCCESS: 7 rules found" in checked, checked
    tested = _run_promtool("test", "rules", str(ALERTS.with_name("alerts.test.yml")))
    assert "SUCCESS" in tested, tested
    names = {r["alert"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]}
    # The alerts, each present.
    assert {"PbxBridgeAmiDown", "PbxBridgeEventLagHigh", "PbxBridgeOutboxDeadLetters",
            "PbxBridgeTranscriptionBacklogGrowing", "PbxBridgeCelSourceDown"} <= names
    cel = next(r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]
               if r["alert"] == "PbxBridgeCelSourceDown")
    assert 'pbx_bridge_cel_source_state{state="down"}' in cel["expr"]


def _run_promtool(*args: str) -> str:
    import subprocess

    done = subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_the_dashboard_covers_what_an_administrator_watches() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = " ".join(expressions().values())
    for metric in ("pbx_bridge_calls{", "pbx_bridge_calls_missed",
                   "pbx_bridge_call_pipeline_event_lag_seconds_bucket", "pbx_bridge_ami_connection_state",
                   "pbx_bridge_outbox_pending", "pbx_bridge_outbox_dead",
                   "pbx_bridge_transcription_jobs", "pbx_bridge_http_request_duration_seconds_bucket"):
        assert metric in exprs, metric
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"], panel["title"]
    assert {v["name"] for v in dashboard["templating"]["list"]} == {"datasource", "instance"}


@pytest.mark.postgres
async def test_every_metric_the_dashboard_and_alerts_name_is_on_metrics(tmp_path: Path) -> None:
    """A bridge with the embedded simulator, which also writes CEL into a PostgreSQL database
    that the bridge reads back: so the CEL source's metrics exist too."""
    cel_db = f"pbx_bridge_obs_cel_{uuid.uuid4().hex[:8]}"
    await _pg_admin(f'CREATE DATABASE "{cel_db}"')
    port = free_port()
    env = cli_env(PBX_BRIDGE_SERVER__DATA_DIR=str(tmp_path / "var"), PBX_BRIDGE_SERVER__PORT=str(port),
                  PBX_BRIDGE_SIMULATOR__PORT="0", PBX_BRIDGE_SIMULATOR__CALLS_PER_SECOND="2",
                  PBX_BRIDGE_SIMULATOR__CEL_URL=_pg_url(cel_db),
                  PBX_BRIDGE_TRANSCRIPTION__IN_PROCESS="false")
    try:
        code, _out, err = await run_cli("db", "upgrade", env=env)
        assert code == 0, err
        code, out, err = await run_cli("tokens", "create", "--role", "manager", "--name", "prometheus",
                                       env=env)
        assert code == 0, err
        token = out.strip().splitlines()[-1]
        log = tmp_path / "serve.log"
        proc = await start_serve(env, log)
        try:
            text = await _scrape_once_busy(port, token, proc, log)
        finally:
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 30) == 0, log.read_text()[-3000:]
    finally:
        await _pg_admin(f'DROP DATABASE IF EXISTS "{cel_db}" WITH (FORCE)')

    samples: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(dict(sample.labels))
    problems = []
    for where, expr in expressions().items():
        for name in set(METRIC.findall(expr)):
            if name not in samples:
                problems.append(f"{where}: {name} is not exported")
        for name, matchers in SELECTOR.findall(expr):
            if name in PROMETHEUS_OWN or name not in samples:
                continue
            for label, op, value in MATCHER.findall(matchers):
                if label in ("instance", "job"):
                    continue  # Prometheus's target labels
                values = {s.get(label) for s in samples[name]}
                if values == {None}:
                    problems.append(f"{where}: {name} has no label {label}")
                elif op == "=" and value not in values:
                    problems.append(f"{where}: {name}{{{label}={value!r}}} never exported ({values})")
                elif op == "=~" and not any(v and re.fullmatch(value, v) for v in values):
                    problems.append(f"{where}: {name}{{{label}=~{value!r}}} matches nothing ({values})")
    assert not problems, "\n".join(problems)


async def _scrape_once_busy(port: int, token: str, proc: asyncio.subprocess.Process, log: Path) -> str:
    """/metrics once the bridge has logged calls, answered HTTP and swept its CEL source."""
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {token}"}
    deadline = time.monotonic() + 60
    text = ""
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            assert proc.returncode is None, _tail(log)
            try:
                async with http.get(f"{base}/healthz") as resp:
                    assert resp.status == 200
                async with http.get(f"{base}/metrics", headers=auth) as resp:
                    assert resp.status == 200, await resp.text()
                    text = await resp.text()
            except aiohttp.ClientConnectionError:
                continue
            ended = re.search(r'^pbx_bridge_calls\{status="(?!live)[a-z_]+"\} [1-9]', text, re.M)
            swept = 'pbx_bridge_cel_source_state{pbx="simulator",state="ok"} 1.0' in text
            lag = "pbx_bridge_call_pipeline_event_lag_seconds_bucket" in text
            if ended and swept and lag:
                return text
    raise AssertionError("the bridge never showed an ended call, a swept CEL source and the "
                         "lag histogram:\n" + text[-3000:] + _tail(log))


def _tail(log: Path) -> str:
    return log.read_text()[-3000:]
