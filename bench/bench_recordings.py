"""Recording conversion speed: a long call's stereo .raw -> verified WAV, against sox.

Run: /work/venv/bin/python -m bench.bench_recordings [--quick]
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

from recordings import convert

ROOT = Path(__file__).resolve().parent.parent
RAW = ROOT.parent / "shared" / "ami-traces" / "recordings" / "pbx-1795731456.0.raw"


def _long_raw(directory: Path, minutes: float) -> tuple[Path, float]:
    """The real recording repeated to `minutes` of audio."""
    data = RAW.read_bytes()
    seconds_each = len(data) / convert.FRAME_BYTES / convert.SAMPLE_RATE
    copies = max(1, round(minutes * 60 / seconds_each))
    path = directory / "long.raw"
    path.write_bytes(data * copies)
    return path, copies * seconds_each


def run(quick: bool = False) -> list[dict[str, object]]:
    minutes = 5.0 if quick else 30.0
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        raw, audio_seconds = _long_raw(Path(tmp), minutes)
        started = time.perf_counter()
        pcm, problem = convert.read_stereo_raw(raw)
        assert problem is None
        info = convert.write_wav([pcm], Path(tmp) / "out.wav")
        convert.verify_wav(info)
        ours = time.perf_counter() - started
        reference: float | None = None
        sox = convert.find_tool("sox")
        if sox is not None:
            started = time.perf_counter()
            convert.sox_convert_stereo_raw(raw, Path(tmp) / "sox.wav", sox)
            reference = audio_seconds / (time.perf_counter() - started)
        rows.append({
            "figure": f"conversion + verification speed ({audio_seconds / 60:.0f} min stereo call)",
            "value": round(audio_seconds / ours, 1), "unit": "x realtime", "target": ">= 100",
            "reference": None if reference is None else round(reference, 1),
            "reference_name": "sox conversion alone (no verification)" if sox else "sox not installed",
        })
        rows.append({
            "figure": "conversion + verification throughput", "value": round(info.size_bytes / ours / 1e6, 1),
            "unit": "MB/s", "target": "-", "reference": None, "reference_name": "",
        })
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(row)
