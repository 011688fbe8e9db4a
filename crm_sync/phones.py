"""Phone numbers: E.164 normalization (phonenumbers), extensions, digit-suffix keys.

Russian formats are the common case: "8 916 123-45-67", "+7 (495) 111-00-00", "89161234567",
"74951110000" (no plus, as Asterisk often presents it) all become "+7...".
"""

from __future__ import annotations

import re

import phonenumbers

_DIGITS = re.compile(r"\D+")


class InvalidPhoneNumber(ValueError):
    """A number that cannot be a customer's phone; the message says why."""


def digits(text: str) -> str:
    return _DIGITS.sub("", text or "")


def is_extension(text: str | None, max_extension_length: int = 5) -> bool:
    """Short all-digit numbers are internal extensions (101, 2005), never customers."""
    d = digits(text or "")
    return bool(d) and len(d) <= max_extension_length and d == (text or "").strip()


def normalize(text: str | None, region: str = "RU", max_extension_length: int = 5) -> str | None:
    """E.164 ("+79161234567") for a valid phone number, else None (extensions, junk, empty)."""
    if not text:
        return None
    raw = text.strip()
    if raw in ("<unknown>", "anonymous", "Anonymous", "unknown"):
        return None
    d = digits(raw)
    if not d or len(d) <= max_extension_length:
        return None
    candidates = [raw]
    # Asterisk often gives international numbers without the "+" (74951110000). Only for plain
    # digit strings, and not when they start with the region's trunk prefix: "8 495 1234567
    # (ask Ivan)" or a mistyped "8495123456" must not become a Vietnamese +84 number.
    if not raw.startswith("+") and not raw.startswith("00") and _plain_digits(raw):
        if not _starts_with_trunk_prefix(d, region):
            candidates.append("+" + d)
    for candidate in candidates:
        try:
            number = phonenumbers.parse(candidate, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return None


def ascii_digits(text: str) -> bool:
    """Only 0-9: str.isdigit(), int() and \\d also accept other scripts' digits ("١٠٢", "１"),
    which would read as another id or reach the PBX as an extension."""
    return text.isascii() and text.isdigit()


def _plain_digits(text: str) -> bool:
    return re.fullmatch(r"[\d\s().\-]+", text) is not None


def _starts_with_trunk_prefix(d: str, region: str) -> bool:
    meta = phonenumbers.PhoneMetadata.metadata_for_region(region)
    if meta is None or not meta.national_prefix:
        return False
    return d.startswith(meta.national_prefix) and str(meta.country_code) != meta.national_prefix


def parse_or_raise(text: str, region: str = "RU", max_extension_length: int = 5) -> str:
    """Like normalize, but an invalid number raises InvalidPhoneNumber with the reason."""
    if not text or not text.strip():
        raise InvalidPhoneNumber("the number is empty")
    if is_extension(text.strip(), max_extension_length):
        raise InvalidPhoneNumber(f"{text!r} is an internal extension, not a phone number")
    result = normalize(text, region, max_extension_length)
    if result is None:
        raise InvalidPhoneNumber(f"{text!r} is not a valid phone number for region {region}")
    return result


def format_national(e164: str) -> str:
    """"+79161234567" -> "8 (916) 123-45-67" style national format, for names and display."""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return e164
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)


def format_international(e164: str) -> str:
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return e164
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


def suffix_key(text: str, length: int = 10) -> str | None:
    """The last `length` digits: the fallback match key for numbers that did not parse."""
    d = digits(text)
    return d[-length:] if len(d) >= min(length, 7) else None
