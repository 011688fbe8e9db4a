"""Prometheus metrics, one registry per application (tests run many apps in one process).

HTTP latencies are observed by a middleware; the rest is read when /metrics is scraped:
calls by status, inbound and missed calls (one grouped query), the CRM outbox's backlog and dead
letters, transcription jobs by state, each PBX connection's state and, when the connection
exposes them, its event queue depth and event lag, live-event subscribers. The call pipeline's
lag histogram (kept by the consumer) is exported as it stands, so its p99 can be computed.

deploy/grafana/pbx-bridge.json and deploy/prometheus/alerts.yml use these names; a test checks
that every name they use is exported (tests/test_observability.py).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from typing import Any, Protocol

import sqlalchemy as sa
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from crm_sync.schema import outbox
from pbx_bridge.db.schema import calls
from pbx_bridge.http.app_keys import RUNTIME
from pbx_bridge.http.auth import require
from pbx_bridge.runtime import Runtime
from recordings.transcription.schema import JOB_STATES, transcription_jobs

PBX_STATES = ("connected", "connecting", "disconnected", "auth_failed", "tls_failed")
CRM_STATES = ("starting", "ok", "down", "stopped")  # crm_sync.connector_state
ROLES = ("alone", "active", "standby")
CEL_STATES = ("idle", "ok", "down", "misconfigured")
CALL_STATUSES = ("live", "answered", "no_answer", "busy", "abandoned", "failed")


class LagSource(Protocol):
    """What the call consumer's LagHistogram offers (cumulative Prometheus-style buckets)."""

    total: float

    def cumulative(self) -> list[tuple[float, int]]: ...


class LagCollector(Collector):
    """The call pipeline's event lag, as a histogram read at scrape time."""

    def __init__(self) -> None:
        self.source: LagSource | None = None

    def collect(self) -> Iterator[HistogramMetricFamily]:
        source = self.source
        if source is None:
            return
        buckets = [("+Inf" if math.isinf(bound) else repr(bound), count)
                   for bound, count in source.cumulative()]
        yield HistogramMetricFamily(
            "pbx_bridge_call_pipeline_event_lag_seconds",
            "Per batch the call pipeline processed: the age of its newest AMI event",
            buckets=buckets, sum_value=source.total)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_seconds = Histogram(
            "pbx_bridge_http_request_duration_seconds", "HTTP request latency",
            ["method", "route", "status"], registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.calls = Gauge("pbx_bridge_calls", "Call records by status (live = in progress)",
                           ["status"], registry=r)
        # Totals that only grow: a rate over an hour is delta(missed) / delta(inbound).
        self.calls_inbound = Gauge("pbx_bridge_calls_inbound", "Inbound call records", registry=r)
        self.calls_missed = Gauge("pbx_bridge_calls_missed",
                                  "Missed call records (inbound and not answered)", registry=r)
        self.outbox_pending = Gauge("pbx_bridge_outbox_pending",
                                    "CRM outbox items waiting to be delivered", registry=r)
        self.outbox_dead = Gauge("pbx_bridge_outbox_dead",
                                 "CRM outbox dead letters (`pbx-bridge outbox dead`)", registry=r)
        self.transcription_jobs = Gauge("pbx_bridge_transcription_jobs",
                                        "Transcription jobs by state (queued = the backlog)",
                                        ["state"], registry=r)
        self.pbx_up = Gauge("pbx_bridge_ami_connection_state",
                            "AMI connection state (1 for the current state)", ["pbx", "state"], registry=r)
        self.event_lag = Gauge("pbx_bridge_ami_event_lag_seconds",
                               "Age of the last AMI event when it was processed", ["pbx"], registry=r)
        self.queue_depth = Gauge("pbx_bridge_queue_depth", "Items waiting in a queue", ["queue"], registry=r)
        self.subscribers = Gauge("pbx_bridge_live_event_subscribers", "Live-event clients connected",
                                 registry=r)
        self.bus_published = Gauge("pbx_bridge_live_events_published", "Live events published",
                                   registry=r)
        self.slow_clients = Counter("pbx_bridge_live_event_clients_dropped",
                                    "Live-event clients disconnected for being slow", registry=r)
        # Native CRM connector (Bitrix24, Kommo): state, what waits, dead letters, limit refusals.
        self.crm_state = Gauge("pbx_bridge_crm_connector_state",
                               "CRM connector state (1 for the current state)", ["connector", "state"],
                               registry=r)
        self.crm_backlog = Gauge("pbx_bridge_crm_outbox_backlog", "Outbox items waiting for the CRM",
                                 ["connector"], registry=r)
        self.crm_dead = Gauge("pbx_bridge_crm_outbox_dead_letters", "Outbox items that gave up",
                              ["connector"], registry=r)
        self.crm_requests = Gauge("pbx_bridge_crm_requests", "Requests sent to the CRM since start",
                                  ["connector"], registry=r)
        self.crm_limited = Gauge("pbx_bridge_crm_limit_errors",
                                 "Requests the CRM refused for its request limit since start",
                                 ["connector"], registry=r)
        self.crm_refreshes = Gauge("pbx_bridge_crm_token_refreshes", "OAuth token refreshes since start",
                                   ["connector"], registry=r)
        self.pipeline_lag = LagCollector()
        r.register(self.pipeline_lag)
        self.role = Gauge("pbx_bridge_role", "This bridge's role (1 for the current one): alone "
                          "(SQLite), active or standby (PostgreSQL, pbx_bridge.standby)", ["role"],
                          registry=r)
        self.cel_state = Gauge("pbx_bridge_cel_source_state",
                               "Each PBX's CEL source state (1 for the current one)", ["pbx", "state"],
                               registry=r)
        self.cel_lag = Gauge("pbx_bridge_cel_backfill_lag_seconds",
                             "How far behind now the PBX's CEL is known to have been swept", ["pbx"],
                             registry=r)
        self.backfilled = Gauge("pbx_bridge_cel_calls_backfilled",
                                "Calls written from CEL by this process since it started", registry=r)

    async def refresh(self, runtime: Runtime) -> None:
        async with runtime.engine.connect() as conn:
            rows = (await conn.execute(
                sa.select(calls.c.status, calls.c.direction, calls.c.missed, sa.func.count())
                .group_by(calls.c.status, calls.c.direction, calls.c.missed)
            )).all()
            pending, dead = (await conn.execute(sa.select(
                sa.func.count().filter(outbox.c.delivered_at.is_(None), outbox.c.dead.is_(sa.false())),
                sa.func.count().filter(outbox.c.dead.is_(sa.true()))))).one()
            jobs = (await conn.execute(
                sa.select(transcription_jobs.c.state, sa.func.count())
                .where(transcription_jobs.c.state != "done")
                .group_by(transcription_jobs.c.state))).all()
        self.calls.clear()
        by_status = dict.fromkeys(CALL_STATUSES, 0)
        inbound = missed = 0
        for status, direction, is_missed, count in rows:
            by_status[status or "live"] = by_status.get(status or "live", 0) + count
            inbound += count if direction == "inbound" else 0
            missed += count if is_missed else 0
        for status, count in by_status.items():
            self.calls.labels(status=status).set(count)
        self.calls_inbound.set(inbound)
        self.calls_missed.set(missed)
        self.outbox_pending.set(pending or 0)
        self.outbox_dead.set(dead or 0)
        by_state = {state: 0 for state in JOB_STATES if state != "done"}
        by_state.update({state: count for state, count in jobs})
        for state, count in by_state.items():
            self.transcription_jobs.labels(state=state).set(count)
        self.pbx_up.clear()
        for name, conn_obj in runtime.pbx.items():
            state = connection_state(conn_obj)
            for s in {*PBX_STATES, state}:
                self.pbx_up.labels(pbx=name, state=s).set(1 if s == state else 0)
            lag = _number(getattr(conn_obj, "event_lag", None))
            if lag is not None:
                self.event_lag.labels(pbx=name).set(lag)
            depth = _depth(conn_obj)
            if depth is not None:
                self.queue_depth.labels(queue=f"ami:{name}").set(depth)
        for name, service in runtime.services.items():
            depth = _depth(service)
            if depth is not None:
                self.queue_depth.labels(queue=name).set(depth)
            # The call consumer: the age of the last event it processed.
            lag = _number(getattr(service, "last_lag_seconds", None))
            if lag is not None:
                self.event_lag.labels(pbx=name).set(lag)
            histogram = getattr(service, "lag", None)
            if callable(getattr(histogram, "cumulative", None)):
                self.pipeline_lag.source = histogram
        connector = runtime.services.get("crm_connector")
        if connector is not None:
            seen = await connector.observe()
            name = seen["connector"]
            self.crm_state.clear()
            for state in CRM_STATES:
                self.crm_state.labels(connector=name, state=state).set(1 if state == seen["state"] else 0)
            self.crm_backlog.labels(connector=name).set(seen["backlog"])
            self.crm_dead.labels(connector=name).set(seen["dead_letters"])
            self.crm_requests.labels(connector=name).set(seen["requests"])
            self.crm_limited.labels(connector=name).set(seen["limit_errors"])
            self.crm_refreshes.labels(connector=name).set(seen["token_refreshes"])
        leadership = runtime.services.get("leadership")
        role = str(leadership.role) if leadership is not None else "alone"
        for name in ROLES:
            self.role.labels(role=name).set(1 if name == role else 0)
        self.cel_state.clear()
        self.cel_lag.clear()
        for backfiller in runtime.services.get("cel") or []:
            for state in CEL_STATES:
                self.cel_state.labels(pbx=backfiller.pbx, state=state).set(
                    1 if state == backfiller.source.state else 0)
            if backfiller.lag_seconds is not None:
                self.cel_lag.labels(pbx=backfiller.pbx).set(backfiller.lag_seconds)
        consumer = runtime.services.get("calls")
        self.backfilled.set(getattr(consumer, "backfilled", 0) or 0)
        self.subscribers.set(runtime.bus.subscriber_count)
        self.bus_published.set(runtime.bus.published)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def _number(value: Any) -> float | None:
    if callable(value):
        value = value()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _depth(component: Any) -> float | None:
    """`queue_depth` if the component reports one, else the size of its asyncio `queue`."""
    depth = _number(getattr(component, "queue_depth", None))
    if depth is None:
        queue = getattr(component, "queue", None)
        if isinstance(queue, asyncio.Queue):
            depth = float(queue.qsize())
    return depth


def connection_state(connection: Any) -> str:
    """A PBX connection's state as a word (its `state`, or its `connected` flag)."""
    state = getattr(connection, "state", None)
    if state is not None:
        return str(getattr(state, "value", state))
    flag = getattr(connection, "connected", None)
    if isinstance(flag, bool):
        return "connected" if flag else "disconnected"
    return "unknown"


METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)


def observe_request(request: web.Request, status: int, seconds: float) -> None:
    """The HTTP latency histogram, fed by the access log's timing (pbx_bridge.http.access_log)."""
    # The route pattern, not the path: ids in paths would explode the label set.
    info = request.match_info.route.resource
    route = info.canonical if info is not None else "unmatched"
    histogram = request.app[METRICS].http_seconds
    histogram.labels(method=request.method, route=route, status=str(status)).observe(seconds)


async def metrics_handler(request: web.Request) -> web.Response:
    require(request, "manager")
    metrics = request.app[METRICS]
    await metrics.refresh(request.app[RUNTIME])
    return web.Response(body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})
