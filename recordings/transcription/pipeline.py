"""One recording to one transcript: read the WAV, recognise each channel, build the dialog,
compute the analytics."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recordings.transcription.analytics import TermLists, analyse
from recordings.transcription.dialog import Turn, build_turns, plain_text
from recordings.transcription.recognize import read_wav, recognize_audio


@dataclass(frozen=True)
class TranscriptResult:
    turns: tuple[Turn, ...]
    plain_text: str
    analytics: dict[str, Any]
    duration: float
    speakers: tuple[str, ...]
    language: str
    model: str

    @property
    def tags(self) -> list[str]:
        return list(self.analytics.get("tags", []))


def transcribe_file(
    model: Any,
    path: Path,
    terms: TermLists,
    *,
    language: str,
    model_label: str,
    should_stop: Callable[[], bool] | None = None,
    progress: Callable[[int], None] | None = None,
) -> TranscriptResult:
    """Blocking (vosk releases the GIL): run it in a worker thread or process."""
    audio = read_wav(path)
    words = recognize_audio(model, audio, should_stop=should_stop, progress=progress)
    turns = build_turns(words)
    return TranscriptResult(
        turns=tuple(turns),
        plain_text=plain_text(turns),
        analytics=analyse(turns, audio.duration, audio.speakers, terms),
        duration=audio.duration,
        speakers=audio.speakers,
        language=language,
        model=model_label,
    )
