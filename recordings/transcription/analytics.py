"""Speech analytics of one call from its turns: talk time per side, silence, interruptions
(overlapping speech), words per minute, and keyword / required-phrase / flagged-word hits."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from recordings.transcription.dialog import Turn
from recordings.transcription.recognize import STEREO_SPEAKERS, Word

TAG_PREFIXES = ("keyword:", "flagged:", "missing_phrase:")
# Required phrases are the operator's script: looked for in what the operator said when the
# recording has an operator channel, else in everything.
SCRIPT_SPEAKER = STEREO_SPEAKERS[0]


@dataclass(frozen=True)
class TermLists:
    keywords: Sequence[str] = field(default=())
    required_phrases: Sequence[str] = field(default=())
    flagged_words: Sequence[str] = field(default=())


Interval = tuple[float, float]


def _merge(intervals: Iterable[Interval]) -> list[Interval]:
    merged: list[Interval] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _length(intervals: Iterable[Interval]) -> float:
    return sum(end - start for start, end in intervals)


def _intersection(a: list[Interval], b: list[Interval]) -> float:
    total = 0.0
    for a_start, a_end in a:
        for b_start, b_end in b:
            total += max(0.0, min(a_end, b_end) - max(a_start, b_start))
    return total


def _tokens(text: str) -> list[str]:
    return [t for t in text.casefold().split() if t]


def find_term(words: Sequence[Word], term: str) -> list[float]:
    """Start times where `term` (a word or a phrase) occurs as consecutive words."""
    wanted = _tokens(term)
    if not wanted:
        return []
    said = [w.word.casefold() for w in words]
    n = len(wanted)
    return [words[i].start for i in range(len(said) - n + 1) if said[i : i + n] == wanted]


def analyse(turns: Sequence[Turn], duration: float, speakers: Sequence[str],
            terms: TermLists) -> dict[str, Any]:
    """Per-call figures (plain JSON-able data); `tags` lists what the call should be tagged with."""
    spans = {s: _merge((t.start, t.end) for t in turns if t.speaker == s) for s in speakers}
    words = {s: [w for t in turns if t.speaker == s for w in t.words] for s in speakers}
    talk = {s: round(_length(spans[s]), 2) for s in speakers}
    speech = _merge(iv for s in speakers for iv in spans[s])
    overlap = 0.0
    interruptions = dict.fromkeys(speakers, 0)
    for i, a in enumerate(speakers):
        for b in speakers[i + 1 :]:
            overlap += _intersection(spans[a], spans[b])
    for turn in turns:
        # Starting to speak while someone else is still speaking.
        if any(o.speaker != turn.speaker and o.start < turn.start < o.end for o in turns):
            interruptions[turn.speaker] = interruptions.get(turn.speaker, 0) + 1
    wpm = {s: round(len(words[s]) / (talk[s] / 60), 1) if talk[s] > 0 else 0.0 for s in speakers}

    def hits(term_list: Sequence[str]) -> list[dict[str, Any]]:
        found = []
        for term in term_list:
            for s in speakers:
                found += [{"term": term, "speaker": s, "start": start} for start in find_term(words[s], term)]
        return sorted(found, key=lambda h: h["start"])

    script_words = words[SCRIPT_SPEAKER] if SCRIPT_SPEAKER in words else [
        w for s in speakers for w in words[s]]
    script_words = sorted(script_words, key=lambda w: w.start)
    present = [p for p in terms.required_phrases if find_term(script_words, p)]
    missing = [p for p in terms.required_phrases if p not in present]
    keyword_hits, flagged_hits = hits(terms.keywords), hits(terms.flagged_words)
    tags = sorted({f"keyword:{h['term']}" for h in keyword_hits}
                  | {f"flagged:{h['term']}" for h in flagged_hits}
                  | {f"missing_phrase:{p}" for p in missing})
    return {
        "duration_seconds": round(duration, 2),
        "talk_seconds": talk,
        "silence_seconds": round(max(0.0, duration - _length(speech)), 2),
        "overlap_seconds": round(overlap, 2),
        "interruptions": interruptions,
        "words": {s: len(words[s]) for s in speakers},
        "words_per_minute": wpm,
        "keyword_hits": keyword_hits,
        "flagged_hits": flagged_hits,
        "required_phrases": {"present": present, "missing": missing},
        "tags": tags,
    }


def merge_tags(existing: Iterable[str], ours: Iterable[str]) -> list[str]:
    """The call's tags with this feature's previous tags replaced by `ours` (others kept)."""
    kept = [t for t in existing if not str(t).startswith(TAG_PREFIXES)]
    return kept + [t for t in ours if t not in kept]
