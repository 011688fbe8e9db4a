"""UI languages: one catalog per language (<lang>.json here), and which one a request gets.

In the core, not in the web UI: the calls export labels its columns from the same catalogs."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path

CATALOG_DIR = Path(__file__).parent
LANGUAGES = ("ru", "en")
# Locale tags for Intl in the browser and for number formats on the server.
LOCALES = {"ru": "ru-RU", "en": "en-GB"}

Catalog = dict[str, str]


def load_catalogs(directory: Path = CATALOG_DIR) -> dict[str, Catalog]:
    catalogs: dict[str, Catalog] = {}
    for lang in LANGUAGES:
        with open(directory / f"{lang}.json", encoding="utf-8") as fh:
            data = json.load(fh)
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise ValueError(f"{directory / lang}.json: a catalog is a JSON object of strings")
        catalogs[lang] = data
    return catalogs


def parse_accept_language(header: str) -> list[str]:
    """Primary language subtags in the browser's order of preference (q=0 left out)."""
    ranked: list[tuple[float, int, str]] = []
    for index, part in enumerate(header.split(",")):
        pieces = part.strip().split(";")
        tag = pieces[0].strip().lower()
        if not tag:
            continue
        quality = 1.0
        for param in pieces[1:]:
            name, _, value = param.strip().partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0:
            ranked.append((-quality, index, tag.split("-")[0]))
    return [tag for _q, _i, tag in sorted(ranked)]


def choose_language(user_setting: str | None, accept_language: str | None, default: str) -> str:
    if user_setting in LANGUAGES:
        assert user_setting is not None
        return user_setting
    for tag in parse_accept_language(accept_language or ""):
        if tag in LANGUAGES:
            return tag
    return default if default in LANGUAGES else LANGUAGES[0]


def translator(catalog: Mapping[str, str]) -> Callable[..., str]:
    """t("key", name=value): the catalog's text with {name} filled in; the key if missing."""

    def t(key: str, **values: object) -> str:
        text = catalog.get(key, key)
        for name, value in values.items():
            text = text.replace("{" + name + "}", str(value))
        return text

    return t


def format_number(value: float, lang: str, decimals: int = 0) -> str:
    """Numbers as people read them: 1 234,5 in Russian, 1,234.5 in English."""
    text = f"{value:,.{decimals}f}"
    if lang == "ru":
        return text.replace(",", "\u00a0").replace(".", ",")
    return text


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
