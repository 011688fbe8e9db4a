"""HTTP Range requests on a stored recording: parsing, and reading the requested bytes.

One range per request (what audio players and CRMs send). A request for several ranges is
answered with the whole file (RFC 9110 lets a server ignore Range). A Range header that is not
`bytes=...` or cannot be satisfied gives 416 with ``Content-Range: bytes */<size>``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# ASCII digits only (\d takes other scripts' digits too).
_SPEC = re.compile(r"^\s*([0-9]*)\s*-\s*([0-9]*)\s*$")
# More digits than any file size: read as "past any end" without int() on thousands of digits
# (which raises ValueError beyond sys.get_int_max_str_digits()).
_MAX_DIGITS = 18
_HUGE = 10**_MAX_DIGITS


class RangeNotSatisfiable(Exception):
    def __init__(self, size: int, message: str) -> None:
        super().__init__(message)
        self.size = size

    @property
    def content_range(self) -> str:
        return f"bytes */{self.size}"


@dataclass(frozen=True)
class ByteRange:
    start: int  # first byte
    end: int  # last byte, inclusive
    size: int  # of the whole file

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    @property
    def content_range(self) -> str:
        return f"bytes {self.start}-{self.end}/{self.size}"


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """None = send the whole file (no Range, or several ranges); RangeNotSatisfiable = 416."""
    if header is None or not header.strip():
        return None
    unit, sep, specs = header.strip().partition("=")
    if not sep or unit.strip().lower() != "bytes":
        raise RangeNotSatisfiable(size, f"unsupported range unit in {header!r}")
    if "," in specs:
        return None
    match = _SPEC.match(specs)
    if not match or (not match.group(1) and not match.group(2)):
        raise RangeNotSatisfiable(size, f"malformed range {header!r}")
    first, last = match.group(1), match.group(2)
    if not first:  # suffix: the last N bytes
        count = _position(last)
        if count == 0 or size == 0:
            raise RangeNotSatisfiable(size, f"empty suffix range {header!r}")
        return ByteRange(max(0, size - count), size - 1, size)
    start = _position(first)
    end = size - 1 if not last else min(_position(last), size - 1)
    if last and _position(last) < start:
        raise RangeNotSatisfiable(size, f"range ends before it starts: {header!r}")
    if start >= size:
        raise RangeNotSatisfiable(size, f"range starts past the end ({size} bytes)")
    return ByteRange(start, end, size)


def _position(digits: str) -> int:
    stripped = digits.lstrip("0") or "0"
    return _HUGE if len(stripped) > _MAX_DIGITS else int(stripped)


def read_chunks(path: Path, start: int, length: int, chunk_size: int = 64 * 1024) -> Iterator[bytes]:
    """The bytes [start, start + length) in chunks (blocking: call from a thread)."""
    with open(path, "rb") as fh:
        fh.seek(start)
        left = length
        while left > 0:
            data = fh.read(min(chunk_size, left))
            if not data:
                raise OSError(f"{path.name} ended {left} bytes early")
            left -= len(data)
            yield data
