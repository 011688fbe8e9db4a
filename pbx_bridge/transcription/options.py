"""The worker pool's options from the bridge's settings."""

from __future__ import annotations

import functools
from pathlib import Path

from pbx_bridge.config import Settings
from pbx_bridge.db.engine import make_engine
from pbx_bridge.log import setup_logging
from pbx_bridge.transcription.tags import write_call_tags
from recordings.transcription.analytics import TermLists
from recordings.transcription.recognize import ModelError, default_model_dir, resolve_model_dir
from recordings.transcription.worker import WorkerOptions, default_worker_count


def model_dir(settings: Settings) -> Path:
    """The configured model directory (ModelError if none is configured or installed)."""
    return resolve_model_dir(settings.transcription.model_dir)


def model_available(settings: Settings) -> bool:
    """False only when no model is configured and the demo package is not installed."""
    return bool(settings.transcription.model_dir) or default_model_dir() is not None


def term_lists(settings: Settings) -> TermLists:
    tr = settings.transcription
    return TermLists(tuple(tr.keywords), tuple(tr.required_phrases), tuple(tr.flagged_words))


def worker_options(settings: Settings) -> WorkerOptions:
    tr = settings.transcription
    return WorkerOptions(
        database_url=settings.database_url,
        model_dir=str(model_dir(settings)),
        language=tr.language,
        lease_seconds=tr.lease_seconds,
        max_attempts=tr.max_attempts,
        retry_backoff_seconds=tr.retry_backoff_seconds,
        poll_seconds=tr.poll_seconds,
        terms=term_lists(settings),
        engine_factory=make_engine,
        tag_writer=write_call_tags,
        process_init=functools.partial(setup_logging, settings.logging.level, settings.logging.format),
    )


def worker_count(settings: Settings, override: int | None = None) -> int:
    return default_worker_count(override if override is not None else settings.transcription.workers)


__all__ = ["ModelError", "model_available", "model_dir", "term_lists", "worker_count", "worker_options"]
