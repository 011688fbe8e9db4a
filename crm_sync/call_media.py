"""What a native connector asks the application about a call's recording and transcript.

crm_sync does not read the recordings feature's tables itself (it never imports the
application): the application passes an object with this shape. An item whose recording is
still being converted answers `Waiting`; a call that will never have one answers `Missing`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class RecordingFile:
    path: Path
    filename: str  # as the CRM shows it, e.g. "call-42.wav"


@dataclass(frozen=True)
class Waiting:
    reason: str


@dataclass(frozen=True)
class Missing:
    reason: str


@dataclass(frozen=True)
class TranscriptTurn:
    speaker: str  # operator | customer | speaker (mono)
    start: float  # seconds from the start of the recording
    end: float
    text: str


class CallMedia(Protocol):
    async def recording(self, call_id: int) -> RecordingFile | Waiting | Missing: ...

    async def transcript(self, call_id: int) -> list[TranscriptTurn] | Waiting | Missing: ...

    def recording_link(self, call_id: int) -> str | None:
        """An absolute URL that plays the call's recording without a token (None: cannot sign)."""
        ...
