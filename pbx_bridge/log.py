"""Structured logging: one line per event, key=value for people or JSON for machines.

Call and PBX ids travel in context variables so every line logged while handling a call carries
them without being passed around. Use ``log.info("ami.connected", extra={"kv": {...}})`` or the
``event()`` shortcut.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
import types
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from pbx_bridge.masking import mask_url

_EMPTY: Mapping[str, Any] = types.MappingProxyType({})
_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "log_context", default=_EMPTY
)

# Values under these keys never reach a log line.
_SECRET_KEY = re.compile(r"(secret|password|token|authorization|cookie|signature)", re.I)
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+")
# Secrets in URLs (?access_token=..., as WebSocket clients send them) in messages and values.
_QUERY_SECRET = re.compile(r"(?i)\b((?:access_)?token|secret|password|signature)=[^&\s\"']+")


def _redact(text: str) -> str:
    return mask_url(_QUERY_SECRET.sub(r"\1=***", _BEARER.sub(r"\1***", text)))


@contextmanager
def log_context(**values: Any) -> Iterator[None]:
    token = _context.set({**_context.get(), **values})
    try:
        yield
    finally:
        _context.reset(token)


def event(logger: logging.Logger, level: int, name: str, **fields: Any) -> None:
    """Log one structured event: a dotted name and its fields."""
    if logger.isEnabledFor(level):
        logger.log(level, name, extra={"kv": fields})


def _clean(key: str, value: Any) -> Any:
    if _SECRET_KEY.search(key):
        return "***"
    if isinstance(value, str):
        return _redact(value)
    return value


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = dict(_context.get())
    fields.update(getattr(record, "kv", {}) or {})
    return {k: _clean(k, v) for k, v in fields.items()}


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        parts = [f"{ts}.{int(record.msecs):03d}Z", record.levelname.lower(), record.name,
                 _quote(_redact(record.getMessage()))]
        parts += [f"{k}={_quote(str(v))}" for k, v in _fields(record).items()]
        line = " ".join(parts)
        if record.exc_info:
            line += " exc=" + _quote(self.formatException(record.exc_info).replace("\n", " | "))
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": _redact(record.getMessage()),
        }
        data.update(_fields(record))
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False, default=str)


def _quote(text: str) -> str:
    if text and not re.search(r'[\s="]', text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def setup_logging(level: str = "INFO", fmt: str = "text", *, stdout: bool = False) -> None:
    """`stdout`: for the services (serve, worker), whose output is their log (journald, docker
    logs); one-shot commands log to stderr so that their standard output stays their data."""
    handler = logging.StreamHandler(sys.stdout if stdout else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's access log repeats what our middleware logs; SQLAlchemy's INFO is per query.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("sqlalchemy").setLevel(logging.WARNING)
