"""The `simulate` + `serve` example of docs/simulator.md, run as written (its commands and its
TOML, read from that document; only the ports are made free ones and `.venv/bin/pbx-bridge` is this
Python's `-m pbx_bridge`): two processes, the simulated Asterisk and the bridge, and the bridge's calls
get their recordings, ready, with the customer's voice in them."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import wave
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.e2e_support import free_port

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(240)


def documented_example() -> tuple[list[str], str]:
    """The example's shell lines and its TOML, from docs/simulator.md (its last section)."""
    text = (ROOT / "docs" / "simulator.md").read_text()
    section = text[text.index("## `simulate` + `serve`"):]
    section = section[: section.index("\n## ", 1)] if "\n## " in section[1:] else section
    shell = re.search(r"```sh\n(.*?)```", section, re.S)
    toml = re.search(r"```toml\n(.*?)```", section, re.S)
    assert shell and toml, "the simulate + serve example of docs/simulator.md is missing"
    return [line for line in shell.group(1).splitlines() if line.strip()], toml.group(1)


def command(line: str, sim_port: int, http_port: int) -> tuple[dict[str, str], list[str]]:
    """A line of the example as (environment, argv) for this Python."""
    words = shlex.split(line.replace("5039", str(sim_port)))
    env = {}
    while "=" in words[0]:
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    assert words[0] == ".venv/bin/pbx-bridge"
    return env, [sys.executable, "-m", "pbx_bridge", *words[1:]]


def test_the_readme_example_records_calls(tmp_path: Path) -> None:
    lines, toml = documented_example()
    sim_port, http_port = free_port(), free_port()
    (tmp_path / "sim-bridge.toml").write_text(
        toml.replace("5039", str(sim_port)).replace("port = 8080", f"port = {http_port}"))
    base = {k: v for k, v in os.environ.items() if not k.startswith("PBX_BRIDGE_")}
    base["PYTHONPATH"] = str(ROOT)
    procs: list[subprocess.Popen[bytes]] = []
    logs = []
    try:
        for line in lines:
            extra, argv = command(line, sim_port, http_port)
            env = {**base, **extra}
            if argv[3:5] == ["db", "upgrade"]:
                subprocess.run(argv, cwd=tmp_path, env=env, check=True, timeout=60, capture_output=True)
                continue
            if argv[3] == "simulate":
                argv += ["--calls-per-second", "2"]  # the example's rate is one call per 5 s
            log = (tmp_path / f"{argv[3]}.log").open("wb")
            logs.append(log)
            procs.append(subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=log, stderr=log))
            time.sleep(1.0)
        def calls_started() -> dict[int, datetime]:
            out = subprocess.run(
                [sys.executable, "-m", "pbx_bridge", "calls", "list", "--json", "--limit", "1000"],
                cwd=tmp_path, env={**base, "PBX_BRIDGE_CONFIG": "sim-bridge.toml"},
                capture_output=True, text=True, timeout=60)
            return {c["id"]: datetime.fromisoformat(c["started_at"].replace("Z", "+00:00"))
                    for c in json.loads(out.stdout)}

        def connected_at() -> datetime | None:
            for line in (tmp_path / "serve.log").read_text().splitlines():
                if "ami.connected" in line:
                    return datetime.fromisoformat(line.split()[0].replace("Z", "+00:00"))
            return None

        # Calls already going on when the bridge connected may end before it can record them
        # (Asterisk then answers "No such channel"); every call that began after must be recorded.
        # On a loaded machine the bridge may connect late: wait for calls it saw from their start.
        listing: list[dict[str, Any]] = []
        started: dict[int, datetime] = {}
        whole: set[int] = set()
        connected = None
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            assert all(p.poll() is None for p in procs), [log.name for log in logs]
            out = subprocess.run([sys.executable, "-m", "pbx_bridge", "recordings", "list", "--json"],
                                 cwd=tmp_path, env={**base, "PBX_BRIDGE_CONFIG": "sim-bridge.toml"},
                                 capture_output=True, text=True, timeout=60)
            listing = [json.loads(x) for x in out.stdout.splitlines() if x.strip()]
            ready = [r for r in listing if r["state"] == "ready"]
            connected = connected_at()
            if len(ready) >= 6 and connected is not None:
                started = calls_started()
                after = connected + timedelta(seconds=1)
                whole = {int(r["call_id"]) for r in ready if started[int(r["call_id"])] > after}
                if len(whole) >= 2:
                    break
            time.sleep(1.0)
        log_text = (tmp_path / "serve.log").read_text()
        ready = [r for r in listing if r["state"] == "ready"]
        assert len(ready) >= 6 and connected is not None, (listing, log_text[-3000:])
        assert len(whole) >= 2, (ready, started, connected)
        failed = [r for r in listing if r["state"] in ("missing", "failed")
                  and started[r["call_id"]] > connected + timedelta(seconds=1)]
        assert not failed, (failed, log_text[-6000:])
        # The recordings of the calls the bridge saw from their start hold the customer's voice
        # (a call it joined in the middle has only what was recorded after it connected).
        stored = (tmp_path / "var" / "sim-bridge" / "recordings").rglob("*.wav")
        wavs = [p for p in stored if int(p.stem) in whole]
        assert len(wavs) >= 2, ready
        for path in wavs:
            with wave.open(str(path)) as wav:
                assert (wav.getnchannels(), wav.getframerate()) == (2, 8000)
                pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)
            assert np.count_nonzero(pcm[:, 1]) > len(pcm) // 4, path  # the customer's side is not silent
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        for log in logs:
            log.close()
    text = (tmp_path / "serve.log").read_text()
    assert "Traceback" not in text, text[-3000:]
