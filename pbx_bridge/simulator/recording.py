"""MixMonitor files of the simulated PBX: real audio, sized to how long the recording ran.

Option `D` (and any `.raw` file) gives what Asterisk 22 writes with `bD`: signed 16-bit
little-endian PCM, 8000 Hz, two interleaved channels (left = read from the channel, right =
written to it). The audio is the real recording from the lab (`data/recording-sample.raw`),
repeated as needed. A `.wav` file without `D` gets the mono mix, as MixMonitor writes it.
"""

from __future__ import annotations

import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

SAMPLE_RATE = 8000
STEREO_FRAME = 4  # two 16-bit samples
SAMPLE_AUDIO = Path(__file__).resolve().parent / "data" / "recording-sample.raw"


@dataclass
class ActiveRecording:
    path: Path
    stereo: bool
    started: float
    monitor_id: str = ""


class Recorder:
    def __init__(self, spool_dir: Path | None) -> None:
        self.spool_dir = Path(spool_dir) if spool_dir else \
            Path(tempfile.gettempdir()) / "pbx-bridge-simulator" / "spool"
        self._active: dict[str, ActiveRecording] = {}
        self.finished: list[Path] = []

    def resolve(self, file_name: str) -> Path:
        """Relative names land in <spool>/monitor/ (as in Asterisk); absolute ones must be in
        the spool directory."""
        requested = Path(file_name)
        spool = self.spool_dir.resolve()
        path = (requested if requested.is_absolute() else spool / "monitor" / requested).resolve()
        if spool not in path.parents:
            raise ValueError(f"File {file_name} is outside the spool directory")
        return path

    def start(self, channel: str, file_name: str, options: str, now: float,
              monitor_id: str = "") -> Path:
        if channel in self._active:
            raise ValueError("MixMonitor already running on this channel")
        path = self.resolve(file_name)
        stereo = "D" in options or path.suffix == ".raw"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")  # Asterisk creates the file at once
        self._active[channel] = ActiveRecording(path, stereo, now, monitor_id)
        return path

    def active(self, channel: str) -> bool:
        return channel in self._active

    def stop(self, channel: str, now: float, monitor_id: str = "") -> bool:
        recording = self._active.get(channel)
        if recording is None or (monitor_id and monitor_id != recording.monitor_id):
            return False
        del self._active[channel]
        write_audio(recording.path, max(0.0, now - recording.started), stereo=recording.stereo)
        self.finished.append(recording.path)
        return True

    def finish_all(self, now: float) -> None:
        for channel in list(self._active):
            self.stop(channel, now)


def stereo_audio(seconds: float) -> bytes:
    """`seconds` of the real lab recording (stereo slin 8 kHz), repeated as needed."""
    source = SAMPLE_AUDIO.read_bytes()
    size = int(seconds * SAMPLE_RATE) * STEREO_FRAME
    if not source:
        return b"\0" * size
    repeats = size // len(source) + 1
    return (source * repeats)[:size]


def write_audio(path: Path, seconds: float, *, stereo: bool) -> None:
    data = stereo_audio(seconds)
    if stereo:
        path.write_bytes(data)
        return
    import array  # local: only for the mono mix

    samples = array.array("h")
    samples.frombytes(data)
    mono = array.array("h", ((samples[i] + samples[i + 1]) // 2 for i in range(0, len(samples), 2)))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(mono.tobytes())
