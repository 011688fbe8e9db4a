"""crm_sync.phones: the "+digits" retry must not turn a Russian trunk-prefixed number (or text with
letters) into another country's number."""

from __future__ import annotations

import pytest

from crm_sync import phones


@pytest.mark.parametrize(
    ("text", "region", "expected"),
    [
        ("74951110000", "RU", "+74951110000"),  # Asterisk's international form without "+"
        ("89161234567", "RU", "+79161234567"),
        ("8 (916) 123-45-67", "RU", "+79161234567"),
        ("+7 495 123 45 67", "RU", "+74951234567"),
        ("12125551234", "RU", "+12125551234"),
        ("2125551234", "US", "+12125551234"),
        ("8 495 1234567 (ask Ivan)", "RU", None),  # was +84951234567 (Vietnam)
        ("8495123456", "RU", None),  # one digit short; was +8495123456
        ("00 7 495 123 45 67", "RU", None),
        ("101", "RU", None),
    ],
)
def test_normalize(text: str, region: str, expected: str | None) -> None:
    assert phones.normalize(text, region) == expected
