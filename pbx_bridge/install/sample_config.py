"""`pbx-bridge config init DIR`: the commented sample configuration shipped in the package
(`config/` of the source tree, `pbx_bridge/sample_config` in the wheel), a `.env` template for
the secrets, and the Asterisk samples, written where an installed bridge keeps them.

Nothing is ever overwritten: an administrator's edited file is worth more than a fresh copy."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

CONFIG_NAME = "pbx-bridge.toml"
ENV_NAME = ".env"
ASTERISK_DIR = "asterisk"

ENV_TEMPLATE = """\
# Secrets of pbx-bridge, kept out of {config_name}: systemd reads this file with
# EnvironmentFile= (deploy/systemd), docker compose with env_file. One KEY=value a line, no
# quotes, no spaces around '='. Readable by the bridge's user only (mode 600).
#
# Any setting can be given here as PBX_BRIDGE_<SECTION>__<KEY>; a [[pbx]] by its name:
# PBX_BRIDGE_PBX__<NAME>__<KEY> (the [[pbx]] table itself must be in {config_name}).
#
# The AMI secret of the [[pbx]] named "main" (manager.conf [bridge] secret):
#PBX_BRIDGE_PBX__MAIN__SECRET=
# Its CEL database, when configured (cel_url holds a password):
#PBX_BRIDGE_PBX__MAIN__CEL_URL=postgresql+asyncpg://cel_reader:PASSWORD@pbx.example/asterisk
# PostgreSQL instead of SQLite (needed for a hot standby):
#PBX_BRIDGE_DATABASE__URL=postgresql+asyncpg://pbx_bridge:PASSWORD@127.0.0.1/pbx_bridge
# Key of signed recording links (the same on every bridge sharing links; 16+ bytes):
#PBX_BRIDGE_RECORDINGS__SIGNING_KEY=
# HMAC key of requests to the external CRM:
#PBX_BRIDGE_CRM__EXTERNAL_HMAC_SECRET=
"""


class AlreadyThere(Exception):
    """A file init would write exists: nothing was written."""


@dataclass
class Written:
    config: Path
    env: Path
    asterisk: list[Path]


def sample_dir() -> Traversable:
    return resources.files("pbx_bridge") / "sample_config"


def sample_config_text(data_dir: Path) -> str:
    """The sample pbx-bridge.toml with `[server] data_dir` set to an absolute path (a relative
    one would depend on the directory the service happens to start in)."""
    text = (sample_dir() / CONFIG_NAME).read_text(encoding="utf-8")
    line = re.compile(r'^data_dir = "[^"]*"$', re.M)
    if len(line.findall(text)) != 1:
        raise RuntimeError("the sample configuration has no single [server] data_dir line")
    quoted = str(data_dir).replace("\\", "\\\\").replace('"', '\\"')
    return line.sub(lambda _m: f'data_dir = "{quoted}"', text)


def init(target: Path, data_dir: Path | None = None) -> Written:
    """Write DIR/pbx-bridge.toml, DIR/.env (mode 600) and DIR/asterisk/*; refuse, writing
    nothing, when any of them exists."""
    data_dir = (data_dir or target / "data").absolute()
    samples = sample_dir() / ASTERISK_DIR
    asterisk = [target / ASTERISK_DIR / item.name for item in sorted(samples.iterdir(),
                                                                     key=lambda i: i.name)
                if item.is_file()]
    config, env = target / CONFIG_NAME, target / ENV_NAME
    present = [p for p in (config, env, *asterisk) if p.exists()]
    if present:
        raise AlreadyThere(", ".join(str(p) for p in present))
    text = sample_config_text(data_dir)
    (target / ASTERISK_DIR).mkdir(parents=True, exist_ok=True)
    config.write_text(text, encoding="utf-8")
    # Created with 600 from the start: never readable by others, not even for a moment.
    fd = os.open(env, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(ENV_TEMPLATE.format(config_name=CONFIG_NAME))
    for path in asterisk:
        path.write_bytes((samples / path.name).read_bytes())
    return Written(config=config, env=env, asterisk=asterisk)
