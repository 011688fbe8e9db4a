"""The packaged install: `python -m build` makes a wheel carrying everything `serve` needs; it
installs into a fresh virtualenv outside the source tree (from wheels only, no network at test
time once the wheelhouse holds the dependencies), and the installed `pbx-bridge` writes its
configuration, migrates a database and serves calls from the bundled simulator.

The wheelhouse (`<project venv>/wheelhouse`) is filled once with `pip wheel` from the package
indexes pip is configured with, the first time a test session finds a dependency missing; every
later run installs with `--no-index`. Nothing from the project's own virtualenv is reused: the
fresh one gets every dependency from wheels, as an administrator's would."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e_support import ROOT, free_port

pytestmark = pytest.mark.timeout(600)

WHEELHOUSE = Path(sys.prefix) / "wheelhouse"


@dataclass
class Installed:
    wheel: Path
    venv: Path

    @property
    def cli(self) -> Path:
        return self.venv / "bin" / "pbx-bridge"


def _run(*args: str | Path, cwd: Path, timeout: float = 600, env: dict[str, str] | None = None,
         ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def _clean_env() -> dict[str, str]:
    """No PYTHONPATH, no PBX_BRIDGE_*: nothing points back into the source tree."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("PBX_BRIDGE_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    work = tmp_path_factory.mktemp("packaged")
    dist = work / "dist"
    built = _run(sys.executable, "-m", "build", "--outdir", dist, ROOT, cwd=work)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (wheel,) = dist.glob("pbx_bridge-*.whl")
    venv = work / "venv"
    base_python = getattr(sys, "_base_executable", sys.executable)
    made = _run(base_python, "-m", "venv", venv, cwd=work)
    assert made.returncode == 0, made.stderr
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--no-index",
           "--find-links", str(WHEELHOUSE), str(wheel)]
    done = _run(*pip, cwd=work, env=_clean_env()) if WHEELHOUSE.is_dir() else None
    if done is None or done.returncode != 0:
        # Once per wheelhouse: every dependency as a wheel, from the indexes pip is set up with.
        fill = _run(sys.executable, "-m", "pip", "wheel", "--wheel-dir", WHEELHOUSE, wheel, cwd=work)
        assert fill.returncode == 0, fill.stderr[-3000:]
        for own in WHEELHOUSE.glob("pbx_bridge-*.whl"):
            own.unlink()  # only dependencies live there: the project's wheel is built fresh
        done = _run(*pip, cwd=work, env=_clean_env())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    yield Installed(wheel=wheel, venv=venv)


def test_the_wheel_carries_what_serve_needs(installed: Installed) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    migrations = sorted(p.name for p in (ROOT / "pbx_bridge/db/migrations/versions").glob("0*.py"))
    assert migrations and all(f"pbx_bridge/db/migrations/versions/{m}" in names for m in migrations)
    for path in ("pbx_bridge/db/migrations/env.py", "pbx_bridge/db/migrations/script.py.mako",
                 "pbx_bridge/sample_config/pbx-bridge.toml",
                 "pbx_bridge/sample_config/asterisk/manager.conf",
                 "pbx_bridge/simulator/data/recording-sample.raw"):
        assert path in names, path
    for folder, pattern in (("web/templates", "*.html"), ("web/static", "*"), ("i18n", "*.json"),
                            ("simulator/data", "*.ami"), ("sample_config/asterisk", "*")):
        expected = [p.name for p in (ROOT / "pbx_bridge" / folder).glob(pattern) if p.is_file()]
        assert expected, folder
        missing = [e for e in expected if f"pbx_bridge/{folder}/{e}" not in names]
        assert not missing, (folder, missing)
    # The sample configuration in the wheel is the source tree's, byte for byte.
    shipped = zipfile.ZipFile(installed.wheel).read("pbx_bridge/sample_config/pbx-bridge.toml")
    assert shipped == (ROOT / "config/pbx-bridge.toml").read_bytes()


def test_installed_wheel_inits_config_migrates_and_serves_calls(installed: Installed,
                                                                tmp_path: Path) -> None:
    env = _clean_env()
    etc = tmp_path / "etc"
    # Run from a directory with no config/ of its own, far from the source tree.
    where = _run(installed.venv / "bin" / "python", "-c",
                 "import pbx_bridge, sys; print(pbx_bridge.__file__)", cwd=tmp_path, env=env)
    assert where.returncode == 0 and where.stdout.startswith(str(installed.venv)), where
    init = _run(installed.cli, "config", "init", etc, "--data-dir", tmp_path / "data",
                cwd=tmp_path, env=env)
    assert init.returncode == 0, init.stderr
    assert (etc / ".env").stat().st_mode & 0o777 == 0o600
    assert (etc / "asterisk" / "manager.conf").read_bytes() == \
        (ROOT / "config/asterisk/manager.conf").read_bytes()
    config = etc / "pbx-bridge.toml"
    port = free_port()
    text = config.read_text()
    for old, new in (('port = 8080', f'port = {port}'), ('format = "text"', 'format = "json"'),
                     ('port = 15038', 'port = 0'), ('calls_per_second = 0.2', 'calls_per_second = 2.0'),
                     ('in_process = true', 'in_process = false')):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    config.write_text(text)
    again = _run(installed.cli, "config", "init", etc, cwd=tmp_path, env=env)
    assert again.returncode == 1 and "nothing written" in again.stderr
    assert config.read_text() == text  # the edited file is untouched

    up = _run(installed.cli, "--config", config, "db", "upgrade", cwd=tmp_path, env=env, timeout=120)
    assert up.returncode == 0, up.stderr
    assert (tmp_path / "data" / "pbx-bridge.sqlite3").is_file()

    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log, (tmp_path / "serve.err").open("wb") as err:
        proc = subprocess.Popen([str(installed.cli), "--config", str(config), "serve"],
                                cwd=tmp_path, env=env, stdout=log, stderr=err)
    try:
        _wait_healthy(port, proc, log_path)
        calls = _wait_for_a_call(installed, config, tmp_path, env)
        assert calls[0]["pbx"] == "simulator" and calls[0]["linkedid"]
        lines = _wait_for_log(log_path, lambda d: d.get("call_id") is not None)
    finally:
        stopping = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        stopped_in = time.monotonic() - stopping
    assert code == 0, (tmp_path / "serve.err").read_text()[-2000:]
    # A clean stop on SIGTERM well within what the systemd unit allows before SIGKILL.
    unit = (ROOT / "deploy/systemd/pbx-bridge.service").read_text()
    timeout_stop = float(re.search(r"^TimeoutStopSec=(\d+)$", unit, re.M).group(1))  # type: ignore[union-attr]
    assert stopped_in < timeout_stop / 3, stopped_in
    # JSON logs on standard output, one object a line, with the documented fields.
    records = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    assert all({"ts", "level", "logger", "event"} <= r.keys() for r in records)
    events = {r["event"] for r in records}
    assert {"serve.ready", "ami.connected", "shutdown", "stopped"} <= events, events
    assert lines and any(r.get("pbx") == "simulator" for r in records)


def _wait_healthy(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
                if resp.status == 200 and json.loads(resp.read()) == {"status": "ok"}:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError("serve never answered /healthz: " + log.read_text()[-3000:])


def _wait_for_a_call(installed: Installed, config: Path, cwd: Path, env: dict[str, str],
                     ) -> list[dict[str, object]]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        listed = _run(installed.cli, "--config", config, "calls", "list", "--json", cwd=cwd, env=env,
                      timeout=60)
        assert listed.returncode == 0, listed.stderr
        calls: list[dict[str, object]] = json.loads(listed.stdout)
        if calls:
            return calls
        time.sleep(0.5)
    raise AssertionError("no call reached the log")


def _wait_for_log(path: Path, match: object) -> list[dict[str, object]]:
    assert callable(match)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = []
        for line in path.read_text().splitlines():
            if line.strip():
                data = json.loads(line)
                if match(data):
                    found.append(data)
        if found:
            return found
        time.sleep(0.3)
    raise AssertionError("no log line names a call: " + path.read_text()[-3000:])
