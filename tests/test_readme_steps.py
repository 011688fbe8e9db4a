"""The README's five steps to a real Asterisk: the `[[pbx]]` table of step 3, with the secret
exported as step 3 says, passes step 4's `config check` (secret masked); without the secret,
`config check` names the variable to set."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def step_three() -> tuple[str, str, str]:
    """The TOML block of step 3, and the variable and value its `export` line sets."""
    text = (ROOT / "README.md").read_text()
    steps = text[text.index("## Connecting a real Asterisk in five steps"):]
    toml = re.search(r"```toml\n(.*?)```", steps, re.S)
    export = re.search(r"export (PBX_BRIDGE_\w+)='([^']*)'", steps)
    assert toml and export, "step 3 of the README lost its TOML or its export line"
    body = "\n".join(line.removeprefix("   ") for line in toml.group(1).splitlines())
    return body, export.group(1), export.group(2)


def config_check(config: Path, extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PBX_BRIDGE_")}
    env.update(extra, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "pbx_bridge", "--config", str(config), "config", "check"],
                          env=env, capture_output=True, text=True, timeout=60)


def test_step_three_passes_step_four(tmp_path: Path) -> None:
    body, variable, secret = step_three()
    config = tmp_path / "pbx-bridge.toml"
    config.write_text(body)
    done = config_check(config, {variable: secret})
    assert done.returncode == 0, done.stderr
    assert 'host = "192.0.2.10"' in done.stdout and secret not in done.stdout
    missing = config_check(config, {})
    assert missing.returncode == 2
    assert variable in missing.stderr
