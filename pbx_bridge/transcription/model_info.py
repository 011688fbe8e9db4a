"""Which vosk model transcribes, in which language, and whether that suits the installation:
a model whose language is not one spoken where `phone.default_region` is (the Korean demo model on
a Russian installation) is a warning on /readyz and on the call page."""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

from babel.languages import get_official_languages

from pbx_bridge.config import Settings
from recordings.transcription.recognize import ModelError, model_language, model_name, resolve_model_dir


class ModelInfo(TypedDict):
    model: str | None  # the model's directory name; None when no model is installed
    language: str | None  # what its transcripts are stored as (ru, en, ko, ...)
    region_languages: list[str]  # CLDR: the languages of phone.default_region (RU -> ru)
    warning: str | None  # "no_model" | "language_mismatch" | None


def region_languages(region: str) -> list[str]:
    return list(get_official_languages(region, de_facto=True))


def model_info(settings: Settings) -> ModelInfo:
    expected = region_languages(settings.phone.default_region)
    try:
        path: Path = resolve_model_dir(settings.transcription.model_dir)
    except ModelError:
        return ModelInfo(model=None, language=None, region_languages=expected, warning="no_model")
    language = model_language(path, settings.transcription.language)
    mismatch = bool(expected) and language.split("-")[0].lower() not in expected
    return ModelInfo(model=model_name(path), language=language, region_languages=expected,
                     warning="language_mismatch" if mismatch else None)
