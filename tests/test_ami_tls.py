"""AMI over TLS: PbxConnection (`[[pbx]] tls`) against the simulator serving TLS with a
certificate made here by trustme (a CA of our own, a server certificate for 127.0.0.1)."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from pbx_bridge.ami.connection import PbxConnection
from pbx_bridge.ami.events import AmiEvent, ChannelsSnapshot, ConnectionLost, ConnectionUp
from pbx_bridge.calls.queue import QueueItem
from pbx_bridge.config import ConfigError, load_settings
from pbx_bridge.simulator.server import AmiSimulator, SimulatorSettings
from tests.e2e_support import ROOT
from tests.test_connection import drain, free_port, next_item, pbx_config, until

pytestmark = pytest.mark.timeout(60)


@dataclass
class Certs:
    ca_file: Path  # the CA that signed the simulator's certificate
    other_ca_file: Path  # a CA that did not
    cert_file: Path
    key_file: Path


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    paths = Certs(tmp_path / "ca.pem", tmp_path / "other-ca.pem", tmp_path / "server.pem",
                  tmp_path / "server.key")
    ca.cert_pem.write_to_path(str(paths.ca_file))
    other.cert_pem.write_to_path(str(paths.other_ca_file))
    server.private_key_pem.write_to_path(str(paths.key_file))
    with paths.cert_file.open("wb") as fh:
        for blob in server.cert_chain_pems:
            fh.write(blob.bytes())
    return paths


@pytest.fixture
async def tls_sim(certs: Certs) -> AsyncIterator[AmiSimulator]:
    simulator = AmiSimulator(SimulatorSettings(auth_fail_delay=0.05, seed=7,
                                               tls_cert_file=certs.cert_file,
                                               tls_key_file=certs.key_file))
    await simulator.start()
    yield simulator
    await simulator.stop()


async def test_login_events_and_reconnect_over_tls(tls_sim: AmiSimulator, certs: Certs,
                                                   traces: Path) -> None:
    queue: asyncio.Queue[QueueItem] = asyncio.Queue()
    conn = PbxConnection(pbx_config(tls_sim.port, tls=True, tls_ca_file=str(certs.ca_file)), queue)
    await conn.start()
    try:
        await next_item(queue, lambda i: isinstance(i, ConnectionUp))
        await next_item(queue, lambda i: isinstance(i, ChannelsSnapshot))
        assert conn.state == "connected"
        # The session really is TLS on the simulator's side (not a plaintext fallback).
        (session,) = tls_sim.logged_in
        assert session.writer.get_extra_info("ssl_object") is not None
        sent = await tls_sim.replay([traces / "inbound_answered.ami"], speed=0)
        got = await collect_events(queue, sent)
        assert len(got) == sent and sent > 20
        assert [e.name for e in got].count("Hangup") >= 2
        # A cut connection comes back over TLS and logs in again.
        assert tls_sim.drop_clients() == 1
        await next_item(queue, lambda i: isinstance(i, ConnectionLost))
        await next_item(queue, lambda i: isinstance(i, ConnectionUp), within=5)
        await next_item(queue, lambda i: isinstance(i, ChannelsSnapshot))
        assert conn.logins == 2 and conn.state == "connected"
        pong = await conn.send_action({"Action": "Ping"})
        assert pong.get("Ping") == "Pong"
    finally:
        await conn.stop()


async def collect_events(queue: asyncio.Queue[QueueItem], count: int) -> list[AmiEvent]:
    events: list[AmiEvent] = []
    while len(events) < count:
        item = await asyncio.wait_for(queue.get(), 5)
        if isinstance(item, AmiEvent):
            events.append(item)
    return events


async def test_untrusted_certificate_is_refused_with_a_state_and_one_log_line(
        tls_sim: AmiSimulator, certs: Certs, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    queue: asyncio.Queue[QueueItem] = asyncio.Queue()
    conn = PbxConnection(pbx_config(tls_sim.port, tls=True, tls_ca_file=str(certs.other_ca_file),
                                    reconnect_min=0.01, reconnect_max=0.3), queue)
    await conn.start()
    try:
        await until(lambda: conn.state == "tls_failed")
        await asyncio.sleep(1.0)  # several slow retries
        assert conn.state == "tls_failed"
        assert "certificate not trusted" in conn.last_error
        errors = [r for r in caplog.records if r.getMessage() == "ami.tls_failed"]
        assert len(errors) == 1 and errors[0].levelno == logging.ERROR
        assert "unable to get local issuer certificate" in errors[0].kv["reason"]  # type: ignore[attr-defined]
        # The secret never left: no session got as far as an action.
        assert not tls_sim.actions
        assert not any(isinstance(i, ConnectionUp) for i in drain(queue))
        # Metrics and /readyz show it (the state is one of the exported ones).
        from pbx_bridge.ops.metrics import PBX_STATES, connection_state
        assert connection_state(conn) == "tls_failed" and "tls_failed" in PBX_STATES
    finally:
        await conn.stop()


async def test_tls_client_on_a_plaintext_port_says_so(certs: Certs,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with AmiSimulator(SimulatorSettings(seed=7)) as plain:
        queue: asyncio.Queue[QueueItem] = asyncio.Queue()
        conn = PbxConnection(pbx_config(plain.port, tls=True, tls_ca_file=str(certs.ca_file),
                                        reconnect_max=0.3), queue)
        await conn.start()
        try:
            await until(lambda: conn.state == "tls_failed")
            assert "no TLS on that port" in conn.last_error, conn.last_error
            assert not plain.actions
        finally:
            await conn.stop()


async def test_tls_without_verification_connects_to_any_certificate(tls_sim: AmiSimulator,
                                                                    certs: Certs) -> None:
    queue: asyncio.Queue[QueueItem] = asyncio.Queue()
    conn = PbxConnection(pbx_config(tls_sim.port, tls=True, tls_verify=False), queue)
    await conn.start()
    try:
        await next_item(queue, lambda i: isinstance(i, ChannelsSnapshot))
        assert conn.state == "connected"
    finally:
        await conn.stop()


async def test_a_ca_file_replaced_on_disk_is_read_at_the_next_try(tls_sim: AmiSimulator,
                                                                   certs: Certs, tmp_path: Path) -> None:
    ca = tmp_path / "pbx-ca.pem"
    ca.write_bytes(certs.other_ca_file.read_bytes())
    queue: asyncio.Queue[QueueItem] = asyncio.Queue()
    conn = PbxConnection(pbx_config(tls_sim.port, tls=True, tls_ca_file=str(ca),
                                    reconnect_max=0.3), queue)
    await conn.start()
    try:
        await until(lambda: conn.state == "tls_failed")
        ca.write_bytes(certs.ca_file.read_bytes())  # the administrator fixes it
        await next_item(queue, lambda i: isinstance(i, ChannelsSnapshot), within=5)
        assert conn.state == "connected" and conn.last_error == ""
    finally:
        await conn.stop()


def _pbx_toml(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "pbx-bridge.toml"
    path.write_text(f'[[pbx]]\nname = "main"\nsecret = "s"\nport = 5039\n{extra}\n')
    return path


def test_tls_settings_are_checked_at_load(tmp_path: Path, certs: Certs) -> None:
    ok = load_settings(_pbx_toml(tmp_path, f'tls = true\ntls_ca_file = "{certs.ca_file}"'), {})
    assert ok.pbx[0].tls and ok.pbx[0].tls_verify  # verification is on by default
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    cases = {
        f'tls = true\ntls_ca_file = "{tmp_path / "missing.pem"}"':
            f"'pbx[0] (main).tls_ca_file' {tmp_path / 'missing.pem'}: no such file",
        f'tls = true\ntls_ca_file = "{garbage}"': "is not a readable PEM CA file",
        f'tls_ca_file = "{certs.ca_file}"': "(main).tls_ca_file' is set but 'tls' is false",
        'tls = "yes"': "'pbx[0].tls' must be true or false",
    }
    for extra, message in cases.items():
        with pytest.raises(ConfigError) as raised:
            load_settings(_pbx_toml(tmp_path, extra), {})
        assert message in str(raised.value), (extra, str(raised.value))


def test_simulate_serves_tls_with_the_given_certificate(tmp_path: Path, certs: Certs) -> None:
    port = free_port()
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "PBX_BRIDGE_SERVER__DATA_DIR": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pbx_bridge", "simulate", "--listen", f"127.0.0.1:{port}",
         "--tls-cert", str(certs.cert_file), "--tls-key", str(certs.key_file)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip().endswith(f"127.0.0.1:{port} (TLS)")

        async def login() -> str:
            queue: asyncio.Queue[QueueItem] = asyncio.Queue()
            conn = PbxConnection(pbx_config(port, tls=True, tls_ca_file=str(certs.ca_file)), queue)
            await conn.start()
            try:
                await next_item(queue, lambda i: isinstance(i, ChannelsSnapshot), within=10)
                return conn.state
            finally:
                await conn.stop()

        assert asyncio.run(login()) == "connected"
    finally:
        proc.terminate()
        proc.wait(10)
    bad = subprocess.run([sys.executable, "-m", "pbx_bridge", "simulate", "--listen", f"127.0.0.1:{port}",
                          "--tls-cert", str(certs.key_file), "--tls-key", str(certs.key_file)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1 and "not a usable certificate and key" in bad.stderr, bad.stderr
