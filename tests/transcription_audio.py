"""Test audio for transcription, built from the real stereo call recordings in the shared data
(left = operator, right = customer, s16le 8 kHz) plus generated silence and tones."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

RATE = 8000
RECORDINGS = "recordings"
# Real recordings (see ami-traces/README.md): A's operator speaks at about 0-1 s, B's customer at
# about 1-3.5 s.
RECORDING_A = "519141ac-8349-46c7-8bc2-db8cbc411c84.raw"
RECORDING_B = "pbx-1795731456.0.raw"
OPERATOR, CUSTOMER = 0, 1


def channel(traces: Path, name: str, which: int) -> np.ndarray:
    """One channel of a real recording as int16 samples."""
    samples = np.fromfile(traces / RECORDINGS / name, dtype="<i2").reshape(-1, 2)
    return np.ascontiguousarray(samples[:, which])


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), dtype=np.int16)


def tone(seconds: float, hz: float = 440.0, amplitude: int = 3000) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def place(length_seconds: float, *parts: tuple[float, np.ndarray]) -> np.ndarray:
    """A track of the given length with each (offset seconds, samples) part mixed in."""
    track = np.zeros(int(length_seconds * RATE), dtype=np.int32)
    for offset, samples in parts:
        start = int(offset * RATE)
        track[start : start + len(samples)] += samples[: len(track) - start]
    return np.clip(track, -32768, 32767).astype(np.int16)


def write_wav(path: Path, left: np.ndarray, right: np.ndarray | None = None, rate: int = RATE) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1 if right is None else 2)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        if right is None:
            wav.writeframes(left.astype("<i2").tobytes())
        else:
            n = max(len(left), len(right))
            stereo = np.zeros((n, 2), dtype="<i2")
            stereo[: len(left), 0] = left
            stereo[: len(right), 1] = right
            wav.writeframes(stereo.tobytes())
    return path


def two_sources_wav(traces: Path, path: Path, customer_offset: float = 5.0) -> Path:
    """Left: A's operator from 0 s; right: B's customer (another call) from `customer_offset`."""
    operator = channel(traces, RECORDING_A, OPERATOR)
    customer = channel(traces, RECORDING_B, CUSTOMER)
    length = customer_offset + len(customer) / RATE
    return write_wav(path, place(length, (0.0, operator)), place(length, (customer_offset, customer)))


def long_call_wav(traces: Path, path: Path, repeats: int = 3) -> Path:
    """A longer two-sided call (for jobs that must still be running when a worker is killed):
    both real recordings repeated, with pauses."""
    left_parts, right_parts = [], []
    offset = 0.0
    for _ in range(repeats):
        for name in (RECORDING_A, RECORDING_B):
            left_parts.append((offset, channel(traces, name, OPERATOR)))
            right_parts.append((offset, channel(traces, name, CUSTOMER)))
            offset += 5.5
    return write_wav(path, place(offset, *left_parts), place(offset, *right_parts))
