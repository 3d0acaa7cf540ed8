"""Prometheus metrics at ``/metrics``: the HTTP API's own requests, the figures of the workers
on this host (summed from their prometheus_client files at each scrape: ingest.promfiles), and,
read from Redis, the queue depth and each follower's lag.

Labels come from closed sets, whatever a client sends: the method is one of ``METHODS`` or
``other`` (uvicorn passes any token as a method), the route is the template of the matched route
(``/api/indices/{index}/search``, never the path a client typed) or ``other``, and the status is
a number the server itself answered with.
"""
from __future__ import annotations

import logging
import time
from typing import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..config import Settings
from ..ingest.broker import known_layout
from ..ingest.follow import load_state
from ..ingest.jobs import redis_client
from ..ingest.promfiles import WorkerFiles
from ..ingest.status import follower_view, lag_seconds

log = logging.getLogger(__name__)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER = "other"


def method_label(method: str) -> str:
    """The method as a label: a standard one, else ``other``."""
    return method if method in METHODS else OTHER


def route_label(scope: Scope) -> str:
    """The template of the route the router matched (fully or by path only), else ``other``."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else OTHER


class HttpMetrics:
    """Requests, latency and errors of the API, in the app's own registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("esm_http_requests", "HTTP requests answered",
                                ["method", "route", "status"], registry=registry)
        self.errors = Counter("esm_http_errors", "HTTP answers with status 400 or more",
                              ["route", "status"], registry=registry)
        self.latency = Histogram("esm_http_request_duration_seconds", "Time to answer a request",
                                 ["method", "route"], buckets=LATENCY_BUCKETS, registry=registry)


class MetricsMiddleware:
    """Outermost ASGI layer: times every request, refusals of the guard included."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        began, status = time.perf_counter(), 500

        async def seen(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, seen)
        finally:
            route, method = route_label(scope), method_label(scope["method"])
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - began)
            if status >= 400:
                self.metrics.errors.labels(route, str(status)).inc()


class RedisCollector(Collector):
    """Queue depth and follower lag, read from Redis when scraped."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def collect(self) -> Iterator:
        try:
            r = redis_client(self.settings)
            yield from self._queue_and_followers(r)
        except Exception as exc:  # noqa: BLE001 - a scrape without Redis still shows the API
            log.warning("metrics from Redis unavailable: %s", exc)
            up = GaugeMetricFamily("esm_redis_up", "Redis answered the metrics scrape")
            up.add_metric([], 0)
            yield up

    def _queue_and_followers(self, r) -> Iterator:
        up = GaugeMetricFamily("esm_redis_up", "Redis answered the metrics scrape")
        up.add_metric([], 1)
        yield up
        layout = known_layout()
        if layout is not None:  # else: kombu's layout unknown (logged), no depth rather than a wrong one
            depth = GaugeMetricFamily("esm_queue_depth", "Tasks waiting in the broker queue (every "
                                      "priority)", labels=["queue"])
            depth.add_metric([self.settings.worker_queue], float(layout.depth(r, self.settings.worker_queue)))
            yield depth
        lag = GaugeMetricFamily("esm_follower_lag_seconds", "Age of the oldest document the "
                                "follower queued that is not indexed yet", labels=["index"])
        running = GaugeMetricFamily("esm_follower_running", "1 while the follower runs", labels=["index"])
        now = time.time()
        for key in r.scan_iter(match="esm:follow:*", count=500):
            key = key.decode()
            if key.endswith(":lock"):
                continue
            state = load_state(r, key.split(":", 2)[2])
            lag.add_metric([state.index], lag_seconds(self.settings, state, now))
            running.add_metric([state.index], float(follower_view(state, now)["state"] == "running"))
        yield lag
        yield running


def metrics_registry(app, settings: Settings) -> CollectorRegistry:
    """The app's registry: its HTTP metrics (outermost middleware), the figures of the workers on
    this host (their prometheus_client files) and the Redis figures."""
    registry = CollectorRegistry()
    app.add_middleware(MetricsMiddleware, metrics=HttpMetrics(registry))
    registry.register(WorkerFiles(settings.worker_metrics_dir))
    registry.register(RedisCollector(settings))
    return registry
