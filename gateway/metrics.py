"""The gateway's Prometheus metrics and tracing: per-request middleware and `GET /metrics`.

The middleware runs after routing, so requests are labelled by route template (`/status/{task_id:str}`,
never the raw path); it times each request, counts it by status, keeps the open SSE streams gauge,
and wraps the request in a server span that continues the caller's `traceparent` (see
`acefarm.infra.tracing`); a job submitted inside it carries the trace on its Kafka record.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from litestar import Controller, Response, get
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from opentelemetry import propagate
from opentelemetry.trace import SpanKind
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from acefarm.infra.metrics import HTTP_REQUEST_SECONDS, HTTP_REQUESTS, SSE_CONNECTIONS
from acefarm.infra.tracing import traced

EVENT_STREAM = b"text/event-stream"


def trace_carrier(headers: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """The request headers the trace propagator reads (`traceparent`, `tracestate`, `baggage`), as text;
    ASGI header names are lower-case already."""
    fields = {name.encode("latin-1") for name in propagate.get_global_textmap().fields}
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in headers if k in fields}


def metrics_middleware(app: ASGIApp) -> ASGIApp:
    """ASGI middleware: request metrics by route, method and status; SSE gauge; one server span per request."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        route = str(scope.get("path_template") or "unmatched")
        method = scope.get("method", "GET")
        status, streaming = 500, False
        started = time.perf_counter()

        async def send_counted(message: Message) -> None:
            nonlocal status, streaming
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = message["headers"]
                streaming = any(k.lower() == b"content-type" and v.startswith(EVENT_STREAM) for k, v in headers)
                if streaming:
                    SSE_CONNECTIONS.inc()
            await send(message)

        carrier = trace_carrier(scope["headers"])
        try:
            with traced(f"{method} {route}", carrier, SpanKind.SERVER, **{"http.route": route}):
                await app(scope, receive, send_counted)
        finally:
            if streaming:
                SSE_CONNECTIONS.dec()
            else:
                HTTP_REQUEST_SECONDS.labels(route, method).observe(time.perf_counter() - started)
            HTTP_REQUESTS.labels(route, method, str(status)).inc()

    return middleware


class MetricsController(Controller):
    """`GET /metrics`."""

    @get("/metrics", summary="Prometheus metrics", include_in_schema=False, sync_to_thread=False)
    def metrics(self) -> Response[bytes]:
        """Every metric of this process in the Prometheus text format."""
        return Response(generate_latest(REGISTRY), headers={"content-type": CONTENT_TYPE_LATEST})
