"""Reading recorded AMI traces (the `.ami` files): what Asterisk sent, and the client's actions.

A trace is byte for byte what Asterisk wrote (`\\r\\n` line ends, a blank line after each
message, the banner first), with the recording client's own actions interleaved as lines
starting with `>>> ` (and `\\n` line ends). See shared/ami-traces/README.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

FrameKind = Literal["banner", "event", "response", "action", "other"]


@dataclass
class Frame:
    kind: FrameKind
    # Header lines in order, repeated keys kept (ChanVariable, Variable).
    headers: list[tuple[str, str]] = field(default_factory=list)
    raw: bytes = b""  # exactly as Asterisk sent it (empty for actions)

    def get(self, key: str, default: str = "") -> str:
        for k, v in self.headers:
            if k == key:
                return v
        return default

    @property
    def name(self) -> str:
        """Event name, action name or Response value."""
        if self.kind == "event":
            return self.get("Event")
        if self.kind == "action":
            return self.get("Action")
        if self.kind == "response":
            return self.get("Response")
        return ""

    @property
    def timestamp(self) -> float | None:
        raw = self.get("Timestamp")
        try:
            return float(raw) if raw else None
        except ValueError:
            return None


def parse_headers(block: bytes) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    for line in block.decode("utf-8", errors="replace").split("\r\n"):
        if not line:
            continue
        key, sep, value = line.partition(":")
        if sep:
            headers.append((key.strip(), value[1:] if value.startswith(" ") else value))
    return headers


def read_trace(path: Path | str) -> list[Frame]:
    """Every frame of a trace file, in order."""
    return parse_trace(Path(path).read_bytes())


def parse_trace(data: bytes) -> list[Frame]:
    frames: list[Frame] = []
    pos = 0
    banner_end = data.find(b"\r\n")
    if data.startswith(b"Asterisk Call Manager") and banner_end != -1:
        frames.append(Frame("banner", [], data[: banner_end + 2]))
        pos = banner_end + 2
    while pos < len(data):
        if data.startswith(b">>> ", pos):
            # The client's action: `>>> Key: value\n` lines up to a blank line.
            action: list[tuple[str, str]] = []
            while data.startswith(b">>> ", pos):
                end = data.find(b"\n", pos)
                end = len(data) if end == -1 else end
                line = data[pos + 4 : end].decode("utf-8", errors="replace").rstrip("\r")
                key, _, value = line.partition(":")
                action.append((key.strip(), value.strip()))
                pos = end + 1
            frames.append(Frame("action", action))
            while data.startswith(b"\r\n", pos) or data.startswith(b"\n", pos):
                pos += 2 if data.startswith(b"\r\n", pos) else 1
            continue
        end = data.find(b"\r\n\r\n", pos)
        if end == -1:
            end = len(data)
            raw = data[pos:end]
        else:
            raw = data[pos : end + 4]
        headers = parse_headers(raw)
        first = headers[0][0] if headers else ""
        kind: FrameKind = "event" if first == "Event" else "response" if first == "Response" else "other"
        if raw.strip():
            frames.append(Frame(kind, headers, raw))
        pos = end + 4
    return frames


def events(frames: list[Frame]) -> list[Frame]:
    return [f for f in frames if f.kind == "event"]
