"""MixMonitor files of the simulated PBX, written as Asterisk 22's app_mixmonitor writes them.

- The main `File`: with option `D`, interleaved stereo (left = audio read from the channel,
  right = audio written to it); without `D`, the two directions mixed into one. `.raw` is bare
  signed 16-bit little-endian 8 kHz PCM ("slin"); `.wav` gets a WAV header.
- `r(file)` / `t(file)`: the read / written direction alone, mono, in files of their own.
- `b`: audio only while the channel is in a bridge; the time it spends outside one is left out
  of the file altogether (nothing is written for it, not even silence), as mixmonitor_thread
  drops those frames.
- Relative file names land in the spool's `monitor/` directory; the files exist (empty) from
  the start.

The audio is what the channel really read and heard at each moment of the recording (see
media.py: each party's voice on the absolute sample clock), so a file made between Asterisk
times a and b holds the samples round(a * 8000) .. round(b * 8000) of those voices.
"""

from __future__ import annotations

import re
import tempfile
import wave
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pbx_bridge.simulator import media
from pbx_bridge.simulator.media import ChannelState

History = Sequence[tuple[float, Mapping[str, ChannelState]]]
# Where a recording's channel states come from: called when the recording stops.
HistorySource = Callable[[], History]

_OPTION = re.compile(r"([A-Za-z])(?:\(([^)]*)\))?")


def parse_options(options: str) -> dict[str, str]:
    """MixMonitor's options as app_mixmonitor reads them: letters, some with `(argument)`."""
    return {m.group(1): m.group(2) or "" for m in _OPTION.finditer(options or "")}


@dataclass
class ActiveRecording:
    channel: str
    path: Path
    read_path: Path | None
    write_path: Path | None
    interleaved: bool  # option D
    bridged_only: bool  # option b
    started: float  # Asterisk time
    history: HistorySource
    monitor_id: str = ""


@dataclass
class Recorder:
    spool_dir_setting: Path | None = None
    _active: dict[str, ActiveRecording] = field(default_factory=dict)
    finished: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.spool_dir = Path(self.spool_dir_setting) if self.spool_dir_setting else \
            Path(tempfile.gettempdir()) / "pbx-bridge-simulator" / "spool"

    def resolve(self, file_name: str) -> Path:
        """Relative names land in <spool>/monitor/ (as in Asterisk); absolute ones must be in
        the spool directory."""
        requested = Path(file_name)
        spool = self.spool_dir.resolve()
        path = (requested if requested.is_absolute() else spool / "monitor" / requested).resolve()
        if spool not in path.parents:
            raise ValueError(f"File {file_name} is outside the spool directory")
        return path

    def start(self, channel: str, file_name: str, options: str, now: float, history: HistorySource,
              monitor_id: str = "") -> Path:
        if channel in self._active:
            raise ValueError("MixMonitor already running on this channel")
        opts = parse_options(options)
        path = self.resolve(file_name)
        read_path = self.resolve(opts["r"]) if opts.get("r") else None
        write_path = self.resolve(opts["t"]) if opts.get("t") else None
        for target in (path, read_path, write_path):
            if target is not None:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(b"")  # Asterisk opens the files at once
        self._active[channel] = ActiveRecording(channel, path, read_path, write_path, "D" in opts,
                                                "b" in opts, now, history, monitor_id)
        return path

    def active(self, channel: str) -> bool:
        return channel in self._active

    def stop(self, channel: str, now: float, monitor_id: str = "") -> bool:
        recording = self._active.get(channel)
        if recording is None or (monitor_id and monitor_id != recording.monitor_id):
            return False
        del self._active[channel]
        write_files(recording, max(recording.started, now))
        self.finished.append(recording.path)
        return True

    def finish_all(self, now: float) -> None:
        for channel in list(self._active):
            self.stop(channel, now)


def write_files(recording: ActiveRecording, end: float) -> None:
    reads: list[np.ndarray] = []
    hears: list[np.ndarray] = []
    for span in media.spans(recording.channel, recording.history(), recording.started, end):
        if recording.bridged_only and not span.bridged:
            continue  # mixmonitor_thread drops the frames: no audio, no silence
        first = media.sample_at(span.start)
        count = media.sample_at(span.end) - first
        if count > 0:
            reads.append(media.mix(span.reads, first, count))
            hears.append(media.mix(span.hears, first, count))
    read = np.concatenate(reads) if reads else np.zeros(0, dtype=np.int16)
    heard = np.concatenate(hears) if hears else np.zeros(0, dtype=np.int16)
    if recording.interleaved:
        main = np.stack([read, heard], axis=1)
    else:
        main = np.clip(read.astype(np.int32) + heard.astype(np.int32), -32768, 32767).astype(np.int16)
    _write(recording.path, main)
    if recording.read_path is not None:
        _write(recording.read_path, read)
    if recording.write_path is not None:
        _write(recording.write_path, heard)


def _write(path: Path, samples: np.ndarray) -> None:
    data = np.ascontiguousarray(samples, dtype="<i2")
    if path.suffix.lower() != ".wav":
        path.write_bytes(data.tobytes())  # .raw / .sln: slin as it is
        return
    with wave.open(str(path), "wb") as out:
        out.setnchannels(2 if data.ndim == 2 else 1)
        out.setsampwidth(2)
        out.setframerate(media.SAMPLE_RATE)
        out.writeframes(data.tobytes())
