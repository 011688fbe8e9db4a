"""The simulator as the demo PBX of `serve`: its settings from [simulator], and the [[pbx]]
settings the bridge needs to talk to it (the lab's channel names, not production's)."""

from __future__ import annotations

from pathlib import Path

from pbx_bridge.config import PbxConfig, SimulatorConfig
from pbx_bridge.simulator.server import AmiSimulator, SimulatorSettings


def simulator_settings(config: SimulatorConfig, data_dir: Path) -> SimulatorSettings:
    return SimulatorSettings(
        host=config.host,
        port=config.port,
        username=config.username,
        secret=config.secret,
        operators=tuple(config.operators),
        traces_dir=Path(config.traces_dir) if config.traces_dir else None,
        spool_dir=Path(config.spool_dir) if config.spool_dir else data_dir / "simulator-spool",
        transfers=True,  # the demo shows transferred calls and their recordings too
        cel_url=config.cel_url,
        cel_table=config.cel_table,
    )


def simulator_pbx_config(config: SimulatorConfig, port: int | None = None) -> PbxConfig:
    """How the bridge connects to the simulated PBX (port: the one it actually listens on)."""
    return PbxConfig(
        name="simulator",
        host=config.host,
        port=port or config.port,
        username=config.username,
        secret=config.secret,
        # The lab's phones (Local channels) and the SIP lab's (PJSIP/101-...): the generator
        # plays traces of both.
        operator_channel=r"^(?:PJSIP|SIP|Local)/(?P<ext>\d{2,6})(?:@(?:operators|op-phone))?-",
        inbound_contexts=["from-trunk"],
        operator_dial_string="Local/{ext}@op-phone/n",
        outbound_context="from-internal",
        asterisk_version="22.10.1",
        cel_url=config.cel_url,
        cel_table=config.cel_table,
    )


async def start_demo_pbx(config: SimulatorConfig, data_dir: Path) -> tuple[AmiSimulator, PbxConfig]:
    """For `serve` without [[pbx]]: the simulator listening and generating calls, and the
    PbxConfig to connect to it. The caller stops the simulator (`await simulator.stop()`)."""
    simulator = AmiSimulator(simulator_settings(config, data_dir))
    await simulator.start()
    if config.calls_per_second > 0:
        simulator.start_generator(config.calls_per_second)
    return simulator, simulator_pbx_config(config, simulator.port)
