"""One timing per HTTP request (issue 17): the access log's duration and the latency histogram's
observation are the same measurement, not two middlewares timing overlapping spans."""

from __future__ import annotations

import logging
import warnings

import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from pbx_bridge.http.access_log import access_log_middleware
from pbx_bridge.ops.metrics import METRICS
from tests.api.conftest import Api


def _histogram_sum(api: Api, route: str) -> float:
    text = api.client.app[METRICS].exposition().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (sample.name == "pbx_bridge_http_request_duration_seconds_sum"
                    and sample.labels.get("route") == route and sample.labels.get("method") == "GET"):
                return float(sample.value)
    return 0.0


async def test_the_log_and_the_metrics_share_one_timing(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    route = "/api/v1/calls"
    before = _histogram_sum(api, route)
    with caplog.at_level(logging.INFO, logger="pbx_bridge.http"):
        resp = await api.client.get(route, headers=api.auth("manager"))
        assert resp.status == 200
        await resp.read()
    (line,) = [r for r in caplog.records if r.getMessage() == "http.request"
               and getattr(r, "kv", {}).get("path") == route]
    observed_ms = (_histogram_sum(api, route) - before) * 1000
    # The log rounds to 0.01 ms; two timers of nested spans would differ by the log's own work.
    assert abs(line.kv["ms"] - observed_ms) <= 0.005 + 1e-6  # type: ignore[attr-defined]
    timing = [m for m in api.client.app.middlewares if m is access_log_middleware]
    assert len(timing) == 1


def test_string_keys_are_errors_in_the_tests() -> None:
    """pyproject's filterwarnings turns aiohttp's NotAppKeyWarning into an error, so a string app
    or request key fails the suite instead of warning."""
    app = web.Application()
    with pytest.raises(web.NotAppKeyWarning):
        app["runtime"] = object()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        app[web.AppKey("runtime", object)] = object()  # the typed key is fine
