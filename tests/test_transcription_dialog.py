"""Turns from per-channel words, and the per-call analytics computed from them."""

from __future__ import annotations

import pytest

from recordings.transcription.analytics import TermLists, analyse, find_term, merge_tags
from recordings.transcription.dialog import Turn, build_turns, format_dialog, plain_text
from recordings.transcription.recognize import Word


def w(word: str, start: float, end: float) -> Word:
    return Word(word, start, end, 0.9)


OPERATOR = [w("здравствуйте", 0.0, 0.8), w("компания", 0.9, 1.4), w("ромашка", 1.5, 2.0),
            w("чем", 5.0, 5.2), w("помочь", 5.3, 5.8)]
CUSTOMER = [w("у", 2.5, 2.6), w("меня", 2.6, 2.9), w("вопрос", 3.0, 3.5),
            w("конкурент", 5.5, 6.0), w("дешевле", 6.0, 6.5)]


def test_turns_split_at_pauses_and_ordered_by_time() -> None:
    turns = build_turns({"operator": OPERATOR, "customer": CUSTOMER})
    assert [(t.speaker, t.text) for t in turns] == [
        ("operator", "здравствуйте компания ромашка"),
        ("customer", "у меня вопрос"),
        ("operator", "чем помочь"),
        ("customer", "конкурент дешевле"),
    ]
    assert (turns[0].start, turns[0].end) == (0.0, 2.0)
    assert plain_text(turns).splitlines()[1] == "у меня вопрос"
    assert format_dialog(turns).splitlines()[2] == "[00:05.0-00:05.8] operator: чем помочь"
    assert Turn.from_dict(turns[3].to_dict()) == turns[3]
    assert build_turns({"operator": [], "customer": []}) == []


def test_analytics_talk_silence_interruptions_wpm() -> None:
    turns = build_turns({"operator": OPERATOR, "customer": CUSTOMER})
    a = analyse(turns, 8.0, ("operator", "customer"), TermLists())
    assert a["talk_seconds"] == {"operator": pytest.approx(2.8), "customer": pytest.approx(2.0)}
    # speech covers 0-2, 2.5-3.5, 5.0-6.5 -> 4.5 s of 8 s
    assert a["silence_seconds"] == pytest.approx(3.5)
    # the customer starts at 5.5 while the operator speaks until 5.8
    assert a["overlap_seconds"] == pytest.approx(0.3)
    assert a["interruptions"] == {"operator": 0, "customer": 1}
    assert a["words"] == {"operator": 5, "customer": 5}
    assert a["words_per_minute"]["customer"] == pytest.approx(150.0)


def test_keyword_phrase_and_flag_hits_become_tags() -> None:
    turns = build_turns({"operator": OPERATOR, "customer": CUSTOMER})
    terms = TermLists(keywords=["Конкурент"], required_phrases=["компания ромашка", "до свидания"],
                      flagged_words=["дешевле", "мошенник"])
    a = analyse(turns, 8.0, ("operator", "customer"), terms)
    assert a["keyword_hits"] == [{"term": "Конкурент", "speaker": "customer", "start": 5.5}]
    assert a["flagged_hits"] == [{"term": "дешевле", "speaker": "customer", "start": 6.0}]
    assert a["required_phrases"] == {"present": ["компания ромашка"], "missing": ["до свидания"]}
    assert a["tags"] == ["flagged:дешевле", "keyword:Конкурент", "missing_phrase:до свидания"]
    # The script is the operator's: the customer saying it does not count.
    a2 = analyse(turns, 8.0, ("operator", "customer"), TermLists(required_phrases=["у меня"]))
    assert a2["required_phrases"]["missing"] == ["у меня"]
    # A phrase must be consecutive words.
    assert find_term(OPERATOR, "здравствуйте ромашка") == []
    assert find_term(OPERATOR, "  ") == []


def test_merge_tags_keeps_other_features_tags() -> None:
    assert merge_tags(["vip", "keyword:old", "missing_phrase:x"], ["keyword:new"]) == ["vip", "keyword:new"]
    assert merge_tags([], []) == []
