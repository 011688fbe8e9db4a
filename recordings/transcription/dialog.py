"""The dialog: each speaker's words (recognised per channel) merged by time into turns."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from recordings.transcription.recognize import Word

# A pause longer than this within one speaker's words starts a new turn.
TURN_GAP_SECONDS = 1.0


@dataclass(frozen=True)
class Turn:
    speaker: str
    start: float
    end: float
    text: str
    words: tuple[Word, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {"speaker": self.speaker, "start": self.start, "end": self.end, "text": self.text,
                "words": [w.to_dict() for w in self.words]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Turn:
        return cls(str(data["speaker"]), float(data["start"]), float(data["end"]), str(data["text"]),
                   tuple(Word.from_dict(w) for w in data.get("words", [])))


def build_turns(words_by_speaker: Mapping[str, Iterable[Word]],
                gap: float = TURN_GAP_SECONDS) -> list[Turn]:
    """Split each speaker's words at pauses longer than `gap`, then order all turns by time."""
    turns: list[Turn] = []
    for speaker, words in words_by_speaker.items():
        current: list[Word] = []
        for word in sorted(words, key=lambda w: w.start):
            if current and word.start - current[-1].end > gap:
                turns.append(_turn(speaker, current))
                current = []
            current.append(word)
        if current:
            turns.append(_turn(speaker, current))
    turns.sort(key=lambda t: (t.start, t.end, t.speaker))
    return turns


def _turn(speaker: str, words: list[Word]) -> Turn:
    return Turn(speaker, words[0].start, max(w.end for w in words), " ".join(w.word for w in words),
                tuple(words))


def plain_text(turns: Iterable[Turn]) -> str:
    """One line per turn, without speaker labels: what full-text search indexes."""
    return "\n".join(t.text for t in turns)


def clock(seconds: float) -> str:
    minutes, rest = divmod(max(seconds, 0.0), 60)
    return f"{int(minutes):02d}:{rest:04.1f}"


def format_dialog(turns: Iterable[Turn]) -> str:
    """The dialog for people: `[00:01.2-00:03.5] customer: text` per turn."""
    return "\n".join(f"[{clock(t.start)}-{clock(t.end)}] {t.speaker}: {t.text}" for t in turns)
