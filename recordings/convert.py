"""Spool files -> one stereo 8 kHz 16-bit WAV, verified before the sources go.

Inputs are signed 16-bit little-endian PCM at 8 kHz ("slin", what MixMonitor writes for `.raw`):
either one interleaved stereo file per segment (option D) or two mono leg files (options r/t).
Left = the operator (audio read from the operator's channel), right = the customer.

Problems with a file never raise past this module as anything but `FileProblem`, each saying
which file and what is wrong, so the caller can mark the recording and retry.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import wave
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from recordings.mixmonitor import Segment

SAMPLE_RATE = 8000
SAMPLE_WIDTH = 2
CHANNELS = 2
FRAME_BYTES = SAMPLE_WIDTH * CHANNELS
Pcm = npt.NDArray[np.int16]  # shape (frames, 2)

ProblemKind = Literal["missing", "empty", "truncated", "unreadable"]

# Modes of what is written: see SECURITY.md (files 0640, directories 0750).
FILE_MODE = 0o640
DIR_MODE = 0o750


class FileProblem(Exception):
    def __init__(self, kind: ProblemKind, path: Path, detail: str) -> None:
        super().__init__(f"{kind}: {path.name}: {detail}")
        self.kind = kind
        self.path = path
        self.detail = detail


class VerificationError(Exception):
    """The WAV just written does not read back as written: the sources are kept."""


@dataclass
class SegmentAudio:
    index: int
    pcm: Pcm
    # Problems found while reading (a truncated tail was cut off): the audio is usable.
    problems: list[FileProblem]


@dataclass(frozen=True)
class WavInfo:
    path: Path
    frames: int
    duration_seconds: float
    size_bytes: int
    sha256: str
    pcm_sha256: str  # of the samples written, to check them when reading back
    channels: int = CHANNELS
    sample_rate: int = SAMPLE_RATE


def _read_samples(path: Path, unit: int) -> tuple[Pcm, FileProblem | None]:
    """The file's whole units (frames) as int16; a partial unit at the end is cut and reported."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileProblem("missing", path, "no such file") from None
    except IsADirectoryError:
        raise FileProblem("unreadable", path, "is a directory") from None
    except OSError as exc:
        raise FileProblem("unreadable", path, exc.strerror or str(exc)) from None
    if not data:
        raise FileProblem("empty", path, "0 bytes")
    extra = len(data) % unit
    problem = None
    if extra:
        problem = FileProblem("truncated", path,
                              f"{len(data)} bytes is not a whole number of {unit}-byte frames "
                              f"({extra} trailing bytes)")
        data = data[: len(data) - extra]
        if not data:
            raise problem
    # Read-only view of the bytes (no copy): slin is little-endian, as is every host we run on.
    return np.frombuffer(data, dtype=np.dtype("<i2")), problem


def read_stereo_raw(path: Path) -> tuple[Pcm, FileProblem | None]:
    samples, problem = _read_samples(path, FRAME_BYTES)
    return samples.reshape(-1, CHANNELS), problem


def merge_legs(rx: Path, tx: Path) -> tuple[Pcm, list[FileProblem]]:
    """Two mono leg files -> stereo (rx = operator left, tx = customer right); the shorter one
    is padded with silence at the end (MixMonitor stops both at once, give or take a frame)."""
    left, p_left = _read_samples(rx, SAMPLE_WIDTH)
    right, p_right = _read_samples(tx, SAMPLE_WIDTH)
    frames = max(len(left), len(right))
    pcm = np.zeros((frames, CHANNELS), dtype=np.int16)
    pcm[: len(left), 0] = left
    pcm[: len(right), 1] = right
    return pcm, [p for p in (p_left, p_right) if p is not None]


def read_segment(spool: Path, segment: Segment) -> SegmentAudio:
    """Left = operator, right = customer, whichever channel MixMonitor ran on. Raises
    FileProblem when a file is missing, empty or unreadable."""
    if segment.mode == "stereo":
        pcm, problem = read_stereo_raw(spool / segment.files["stereo"])
        problems = [problem] if problem else []
    else:
        pcm, problems = merge_legs(spool / segment.files["rx"], spool / segment.files["tx"])
    if segment.perspective == "customer":
        # Read from the customer's channel = the customer: swap to keep the operator on the left.
        pcm = pcm[:, ::-1]
    return SegmentAudio(segment.index, pcm, problems)


def source_paths(spool: Path, segments: Iterable[Segment]) -> list[Path]:
    return [spool / name for seg in segments for name in seg.files.values()]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_wav(parts: Iterable[Pcm], out: Path) -> WavInfo:
    """Concatenate the parts in order into `out` (written to a temporary name, then renamed)."""
    out.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    frames = 0
    pcm_digest = hashlib.sha256()
    try:
        # A call's audio is personal data: owner read-write, group read, nobody else, whatever
        # the process umask (O_TRUNC: a .part left by a crash is overwritten).
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as raw, wave.open(raw, "wb") as wav:
            wav.setnchannels(CHANNELS)
            wav.setsampwidth(SAMPLE_WIDTH)
            wav.setframerate(SAMPLE_RATE)
            for pcm in parts:
                data = np.ascontiguousarray(pcm, dtype="<i2").tobytes()
                wav.writeframes(data)
                pcm_digest.update(data)
                frames += len(pcm)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return WavInfo(out, frames, frames / SAMPLE_RATE, out.stat().st_size, sha256_of(out),
                   pcm_digest.hexdigest())


def verify_wav(info: WavInfo) -> None:
    """Re-read the header, the frame count, the file's checksum and the samples' checksum."""
    try:
        with wave.open(str(info.path), "rb") as wav:
            params = wav.getparams()
            data = wav.readframes(params.nframes)
    except (OSError, EOFError, wave.Error) as exc:
        raise VerificationError(f"{info.path.name}: cannot be read back: {exc}") from None
    if (params.nchannels, params.sampwidth, params.framerate) != (CHANNELS, SAMPLE_WIDTH, SAMPLE_RATE):
        raise VerificationError(f"{info.path.name}: header says {params.nchannels} ch, "
                                f"{params.sampwidth * 8} bit, {params.framerate} Hz")
    if params.nframes != info.frames or len(data) != info.frames * FRAME_BYTES:
        raise VerificationError(f"{info.path.name}: {params.nframes} frames, expected {info.frames}")
    if info.path.stat().st_size != info.size_bytes or sha256_of(info.path) != info.sha256:
        raise VerificationError(f"{info.path.name}: checksum changed after writing")
    if hashlib.sha256(data).hexdigest() != info.pcm_sha256:
        raise VerificationError(f"{info.path.name}: samples differ from those written")


def read_wav(path: Path) -> Pcm:
    """A stored WAV's samples as (frames, 2) int16."""
    with wave.open(str(path), "rb") as wav:
        if wav.getnchannels() != CHANNELS or wav.getsampwidth() != SAMPLE_WIDTH:
            raise ValueError(f"{path.name}: not a 16-bit stereo WAV")
        data = wav.readframes(wav.getnframes())
    return np.frombuffer(data, dtype="<i2").astype(np.int16).reshape(-1, CHANNELS)


# --- optional tools ------------------------------------------------------------------------

Compression = Literal["none", "opus", "mp3"]
_CODECS: dict[str, tuple[str, list[str]]] = {
    "opus": (".opus", ["-c:a", "libopus", "-b:a", "24k"]),
    "mp3": (".mp3", ["-c:a", "libmp3lame", "-b:a", "32k"]),
}


def find_tool(name: str, configured: str = "", search_path: str | None = None) -> str | None:
    """The tool's executable: the configured path if it is executable, else `name` on PATH."""
    if configured:
        return configured if os.path.isfile(configured) and os.access(configured, os.X_OK) else None
    return shutil.which(name, path=search_path)


def compress(wav: Path, fmt: Compression, ffmpeg: str, timeout: float = 300.0) -> Path:
    """Encode next to the WAV with ffmpeg; the WAV stays (it is what playback serves)."""
    suffix, codec = _CODECS[fmt]
    out = wav.with_suffix(suffix)
    tmp = out.with_name(out.stem + ".part" + suffix)
    try:
        result = subprocess.run(
            [ffmpeg, "-nostdin", "-loglevel", "error", "-y", "-i", str(wav), *codec, str(tmp)],
            capture_output=True, timeout=timeout, check=False,
        )
        if result.returncode != 0 or not tmp.exists() or tmp.stat().st_size == 0:
            err = result.stderr.decode("utf-8", "replace").strip().splitlines()
            raise RuntimeError(f"ffmpeg failed ({result.returncode}): {err[-1] if err else 'no output'}")
        os.chmod(tmp, FILE_MODE)  # ffmpeg creates it under the umask
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def sox_convert_stereo_raw(raw: Path, out: Path, sox: str, timeout: float = 120.0) -> None:
    """The same conversion with sox (where installed), for a single stereo .raw."""
    result = subprocess.run(
        [sox, "-t", "raw", "-r", str(SAMPLE_RATE), "-e", "signed-integer", "-b", "16", "-c", "2",
         "-L", str(raw), "-t", "wav", str(out)],
        capture_output=True, timeout=timeout, check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"sox failed: {result.stderr.decode('utf-8', 'replace').strip()}")
