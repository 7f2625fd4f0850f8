"""Prometheus metrics of one service process (its own registry): requests, latencies, batch sizes, gallery size."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,  # noqa: F401  (re-exported for the route)
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """The service's counters; ``render()`` gives the Prometheus text format."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("oneshot_requests", "HTTP requests answered", ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("oneshot_request_seconds", "Time to answer a request", ["route"], buckets=LATENCY_BUCKETS,
                                 registry=self.registry)
        self.batch = Histogram("oneshot_identify_batch_size", "Queries per embedder call of identify", buckets=BATCH_BUCKETS,
                               registry=self.registry)
        self.classes = Gauge("oneshot_gallery_classes", "Classes in the gallery (as last seen by this process)", registry=self.registry)
        self.errors = Counter("oneshot_errors", "Error answers by code", ["code"], registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI middleware timing and counting every HTTP request by its route template."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = [500]

        async def send_status(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            name = getattr(route, "path", None) or ("static" if scope["path"].startswith("/static") else "unmatched")
            self.metrics.requests.labels(name, scope["method"], str(status[0])).inc()
            self.metrics.latency.labels(name).observe(time.perf_counter() - t0)


class BodyLimitMiddleware:
    """Refuse request bodies over ``limit`` bytes (413 ``too_large``): at once from Content-Length, or as soon
    as a streamed body crosses the limit."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        from oneshot.service.errors import body as error_body

        declared = dict(scope.get("headers") or []).get(b"content-length")
        too_big = f"the request is larger than this service's limit of {self.limit} bytes: send a smaller file"
        try:
            too_long = declared is not None and int(declared) > self.limit
        except ValueError:
            too_long = False
        if too_long:
            import json
            import logging

            logging.getLogger("oneshot.service").warning("%s %s -> 413 too_large: %s", scope["method"], scope["path"], too_big)
            payload = json.dumps(error_body("too_large", too_big)).encode()
            await send({"type": "http.response.start", "status": 413,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                                    (b"connection", b"close")]})
            await send({"type": "http.response.body", "body": payload})
            return
        seen = [0]
        boundary = _boundary(dict(scope.get("headers") or []).get(b"content-type", b""))
        tail = [b""]

        async def counted() -> dict:
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                seen[0] += len(chunk)
                from starlette.exceptions import HTTPException  # re-raised as is by FastAPI's body parsing

                if seen[0] > self.limit:
                    raise HTTPException(413, too_big)
                if boundary:
                    tail[0] = (tail[0] + chunk)[-(len(boundary) + 8):]
                    if not message.get("more_body", False) and seen[0] and not tail[0].rstrip(b"\r\n").endswith(b"--" + boundary + b"--"):
                        raise HTTPException(400, "truncated multipart body")
            return message

        await self.app(scope, counted, send)


def _boundary(content_type: bytes) -> bytes | None:
    """The boundary of a ``multipart/form-data`` content type, else None."""
    if not content_type.lower().startswith(b"multipart/"):
        return None
    for part in content_type.split(b";")[1:]:
        key, _, value = part.strip().partition(b"=")
        if key.lower() == b"boundary" and value:
            return value.strip(b'"')
    return None
