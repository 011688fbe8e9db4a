"""Spool files -> stereo WAV, on the real MixMonitor recordings from the traces."""

from __future__ import annotations

import shutil
import wave
from pathlib import Path

import numpy as np
import pytest

from recordings import convert
from recordings.convert import FileProblem, VerificationError
from recordings.mixmonitor import plan_segment

LAB = "519141ac-8349-46c7-8bc2-db8cbc411c84.raw"
SIP = "pbx-1795731456.0.raw"


def raw_samples(path: Path) -> np.ndarray:
    return np.fromfile(path, dtype="<i2").reshape(-1, 2)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))


@pytest.mark.parametrize("name", [LAB, SIP])
def test_real_stereo_raw_to_wav_sample_by_sample(traces: Path, tmp_path: Path, name: str) -> None:
    raw = traces / "recordings" / name
    expected = raw_samples(raw)
    pcm, problem = convert.read_stereo_raw(raw)
    assert problem is None
    info = convert.write_wav([pcm], tmp_path / "out.wav")
    convert.verify_wav(info)
    with wave.open(str(info.path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (2, 2, 8000)
        assert wav.getnframes() == raw.stat().st_size // 4 == info.frames
    assert info.size_bytes == 44 + raw.stat().st_size  # canonical header + the same samples
    assert info.duration_seconds == pytest.approx(raw.stat().st_size / 4 / 8000)
    stored = convert.read_wav(info.path)
    assert stored.shape == expected.shape
    # Left = what was read from the operator's channel, right = what was written to it.
    assert np.array_equal(stored[:, 0], expected[:, 0])
    assert np.array_equal(stored[:, 1], expected[:, 1])
    assert convert.sha256_of(info.path) == info.sha256


def test_sip_recording_channels_hold_the_right_speakers(traces: Path, tmp_path: Path) -> None:
    """README: operator (left) speaks about 0-1 s, the customer (right) about 1-3.5 s, no overlap."""
    pcm, _ = convert.read_stereo_raw(traces / "recordings" / SIP)
    info = convert.write_wav([pcm], tmp_path / "sip.wav")
    wav = convert.read_wav(info.path)
    left, right = wav[:, 0], wav[:, 1]
    for start in np.arange(0.1, 0.8, 0.1):  # operator talking, customer silent
        window = slice(int(start * 8000), int((start + 0.1) * 8000))
        assert rms(left[window]) > 500, start
        assert rms(right[window]) < 10, start
    for start in np.arange(1.1, 3.4, 0.1):  # customer talking, operator silent (short pauses ok)
        window = slice(int(start * 8000), int((start + 0.1) * 8000))
        assert rms(left[window]) < 10, start
    assert rms(right[int(1.1 * 8000): int(3.4 * 8000)]) > 2000
    assert rms(left[: int(0.9 * 8000)]) > 2000
    assert rms(wav[int(3.8 * 8000):]) < 10  # silence at the end on both


def test_leg_files_are_merged_into_stereo(traces: Path, tmp_path: Path) -> None:
    source = raw_samples(traces / "recordings" / SIP)
    segment = plan_segment("pbx-1795731456.0", 1, stereo=False, channel="PJSIP/101-00000001",
                           operator="101", started_at=0.0)
    (tmp_path / segment.files["rx"]).write_bytes(source[:, 0].astype("<i2").tobytes())
    # The transmit leg one frame (20 ms) shorter: padded with silence at the end.
    (tmp_path / segment.files["tx"]).write_bytes(source[:-160, 1].astype("<i2").tobytes())
    audio = convert.read_segment(tmp_path, segment)
    assert audio.problems == []
    assert np.array_equal(audio.pcm[:, 0], source[:, 0])
    assert np.array_equal(audio.pcm[:-160, 1], source[:-160, 1])
    assert not audio.pcm[-160:, 1].any()
    info = convert.write_wav([audio.pcm], tmp_path / "legs.wav")
    convert.verify_wav(info)
    assert np.array_equal(convert.read_wav(info.path)[:, 0], source[:, 0])


def test_a_segment_recorded_on_the_customers_channel_is_swapped(traces: Path, tmp_path: Path) -> None:
    source = raw_samples(traces / "recordings" / SIP)
    for stereo in (True, False):
        segment = plan_segment("pbx-1795731456.0", 2, stereo=stereo, channel="PJSIP/trunk-00000000",
                               operator="102", started_at=0.0, perspective="customer")
        if stereo:
            (tmp_path / segment.files["stereo"]).write_bytes(source.astype("<i2").tobytes())
        else:  # r() = read from the customer's channel = the customer
            (tmp_path / segment.files["rx"]).write_bytes(source[:, 0].astype("<i2").tobytes())
            (tmp_path / segment.files["tx"]).write_bytes(source[:, 1].astype("<i2").tobytes())
        audio = convert.read_segment(tmp_path, segment)
        assert np.array_equal(audio.pcm[:, 0], source[:, 1]) and np.array_equal(audio.pcm[:, 1], source[:, 0])
        info = convert.write_wav([audio.pcm], tmp_path / "swapped.wav")
        convert.verify_wav(info)
        assert np.array_equal(convert.read_wav(info.path), source[:, ::-1])


def test_the_wav_writer_writes_its_parts_in_order(traces: Path, tmp_path: Path) -> None:
    first, _ = convert.read_stereo_raw(traces / "recordings" / LAB)
    second, _ = convert.read_stereo_raw(traces / "recordings" / SIP)
    info = convert.write_wav([first, second], tmp_path / "both.wav")
    convert.verify_wav(info)
    stored = convert.read_wav(info.path)
    assert np.array_equal(stored[: len(first)], first)
    assert np.array_equal(stored[len(first):], second)


def test_truncated_file_keeps_whole_frames_and_reports(traces: Path, tmp_path: Path) -> None:
    data = (traces / "recordings" / SIP).read_bytes()
    for extra in (1, 2, 3):
        bad = tmp_path / f"cut{extra}.raw"
        bad.write_bytes(data[: 4000 + extra])
        pcm, problem = convert.read_stereo_raw(bad)
        assert problem is not None and problem.kind == "truncated"
        assert f"{extra} trailing bytes" in str(problem)
        assert len(pcm) == 1000
        assert np.array_equal(pcm, raw_samples(traces / "recordings" / SIP)[:1000])
    odd = tmp_path / "leg.raw"
    odd.write_bytes(data[:101])
    with pytest.raises(FileProblem) as missing:
        convert.merge_legs(odd, tmp_path / "nope.raw")
    assert missing.value.kind == "missing"


def test_missing_empty_and_partial_only_files(tmp_path: Path) -> None:
    with pytest.raises(FileProblem) as exc:
        convert.read_stereo_raw(tmp_path / "absent.raw")
    assert exc.value.kind == "missing"
    (tmp_path / "empty.raw").write_bytes(b"")
    with pytest.raises(FileProblem) as exc:
        convert.read_stereo_raw(tmp_path / "empty.raw")
    assert exc.value.kind == "empty"
    (tmp_path / "tiny.raw").write_bytes(b"\x01\x02\x03")
    with pytest.raises(FileProblem) as exc:
        convert.read_stereo_raw(tmp_path / "tiny.raw")
    assert exc.value.kind == "truncated"
    (tmp_path / "dir.raw").mkdir()
    with pytest.raises(FileProblem) as exc:
        convert.read_stereo_raw(tmp_path / "dir.raw")
    assert exc.value.kind == "unreadable"


def test_verification_catches_a_changed_file(traces: Path, tmp_path: Path) -> None:
    pcm, _ = convert.read_stereo_raw(traces / "recordings" / LAB)
    info = convert.write_wav([pcm], tmp_path / "x.wav")
    data = bytearray(info.path.read_bytes())
    data[1000] ^= 0xFF
    info.path.write_bytes(bytes(data))
    with pytest.raises(VerificationError, match="checksum"):
        convert.verify_wav(info)
    info.path.write_bytes(bytes(data[:-4]))
    with pytest.raises(VerificationError):
        convert.verify_wav(info)


@pytest.mark.skipif(shutil.which("sox") is None, reason="sox is not installed")
def test_sox_gives_the_same_samples(traces: Path, tmp_path: Path) -> None:
    sox = convert.find_tool("sox")
    assert sox is not None
    raw = traces / "recordings" / SIP
    convert.sox_convert_stereo_raw(raw, tmp_path / "sox.wav", sox)
    assert np.array_equal(convert.read_wav(tmp_path / "sox.wav"), raw_samples(raw))


def test_ffmpeg_detection(tmp_path: Path) -> None:
    # Not installed on this machine: detection says so (and compression is then skipped).
    assert convert.find_tool("ffmpeg") == shutil.which("ffmpeg")
    assert convert.find_tool("ffmpeg", search_path=str(tmp_path)) is None
    assert convert.find_tool("ffmpeg", configured=str(tmp_path / "ffmpeg")) is None
    not_executable = tmp_path / "ffmpeg"
    not_executable.write_text("")
    assert convert.find_tool("ffmpeg", configured=str(not_executable)) is None
    assert convert.find_tool("ffmpeg", search_path=str(tmp_path)) is None
    not_executable.chmod(0o755)
    assert convert.find_tool("ffmpeg", search_path=str(tmp_path)) == str(not_executable)
