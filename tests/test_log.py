"""Structured logging: one line per event, PBX and call ids from the context, secrets masked."""

from __future__ import annotations

import io
import json
import logging

from pbx_bridge.log import JsonFormatter, KeyValueFormatter, event, log_context


def _capture(formatter: logging.Formatter) -> tuple[logging.Logger, io.StringIO]:
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"test.log.{id(buffer)}")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger, buffer


def test_context_ids_on_every_line_key_value() -> None:
    logger, buffer = _capture(KeyValueFormatter())
    with log_context(pbx="main", linkedid="1795729997.12"):
        event(logger, logging.INFO, "call.saved", status="answered", secret="hunter2")
    event(logger, logging.INFO, "outside")
    first, second = buffer.getvalue().splitlines()
    assert "call.saved" in first and "pbx=main" in first and "linkedid=1795729997.12" in first
    assert "status=answered" in first and "hunter2" not in first and "secret=***" in first
    assert "pbx=" not in second  # the context ends with the block


def test_json_lines_carry_context_and_mask_bearer_tokens() -> None:
    logger, buffer = _capture(JsonFormatter())
    with log_context(pbx="main"):
        event(logger, logging.WARNING, "http.request", header="Bearer abc.def-123")
    data = json.loads(buffer.getvalue())
    assert data["event"] == "http.request" and data["pbx"] == "main" and data["level"] == "warning"
    assert "abc.def-123" not in buffer.getvalue()
