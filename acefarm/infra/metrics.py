"""Every Prometheus metric acefarm exports, defined once, and the way a worker serves them.

The gateway serves the default registry at `/metrics`; workers and streams serve it on `METRICS_PORT`
(`serve_metrics`). Each process exports the metrics it updates (a counter that a process never
touches stays at zero there). Names follow Prometheus conventions: `_total` counters, `_seconds`
histograms, base units.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from wsgiref.simple_server import WSGIServer

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from acefarm.infra.logging import get_logger

log = get_logger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Request latencies: milliseconds to seconds."""
JOB_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0)
"""Job and stage durations: sub-second tiny-model jobs to hours of LoRA training."""

# Gateway
HTTP_REQUESTS = Counter(
    "acefarm_http_requests",
    "HTTP requests answered, by route template, method and status.",
    ["route", "method", "status"],
)
HTTP_REQUEST_SECONDS = Histogram(
    "acefarm_http_request_seconds",
    "Time to answer an HTTP request (to the end of the body; SSE streams excluded), by route and method.",
    ["route", "method"],
    buckets=LATENCY_BUCKETS,
)
TASKS_SUBMITTED = Counter("acefarm_tasks_submitted", "Tasks accepted and queued by the gateway, by kind.", ["kind"])
SSE_CONNECTIONS = Gauge("acefarm_sse_connections", "Server-sent event streams open now.")
QUEUE_DEPTH = Gauge(
    "acefarm_queue_depth",
    "Records on a topic that its consumer group has not committed yet (log end minus committed offset).",
    ["topic", "group"],
)
CONSUMER_LAG = Gauge(
    "acefarm_consumer_lag", "Log end minus committed offset, per partition.", ["topic", "group", "partition"]
)
QUEUE_DRAIN_RATE = Gauge(
    "acefarm_queue_drain_rate", "Records committed per second by a group on a topic (last minute).", ["topic", "group"]
)
WORKERS_ALIVE = Gauge("acefarm_workers_alive", "Workers whose heartbeat is recent, by kind.", ["kind"])

# Long-job workers (GPU consumer, trainer)
JOBS = Counter(
    "acefarm_jobs", "Jobs finished, by worker kind, outcome and failure reason.", ["kind", "outcome", "reason"]
)
JOB_SECONDS = Histogram(
    "acefarm_job_seconds",
    "Time from a job's start to its final event, by kind and outcome.",
    ["kind", "outcome"],
    buckets=JOB_BUCKETS,
)
STAGE_SECONDS = Histogram(
    "acefarm_stage_seconds",
    "Time spent per stage: `queued` is the wait from submission to a worker taking the job; the others come "
    "from the job's progress reports (encoding, diffusion, decoding, uploading, training, ...).",
    ["stage"],
    buckets=JOB_BUCKETS,
)
ENGINE_IDLE_SECONDS = Histogram(
    "acefarm_engine_idle_seconds",
    "Time the engine stood idle between two queued jobs: from one job's engine call returning to the next "
    "one's beginning.",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0, 5.0),
)
TAKES = Counter("acefarm_takes", "Audio takes produced.")
AUDIO_SECONDS = Counter("acefarm_audio_seconds", "Seconds of audio produced (all takes).")
ADAPTER_CACHE = Counter("acefarm_adapter_cache", "LoRA adapter lookups by the worker's cache: hit or miss.", ["result"])

# Everyone who validates records
DEAD_LETTERS = Counter("acefarm_dead_letters", "Records sent to the dead-letter topic, by consumer.", ["consumer"])

# Streams
FOLDS = Counter(
    "acefarm_stream_folds", "Status changes folded and published by streams, by event type.", ["event_type"]
)
TRIMMED = Counter("acefarm_stream_trimmed", "Finished tasks whose status row streams deleted (STATUS_RETENTION_DAYS).")

# Scheduler
ADMISSIONS = Counter("acefarm_scheduler_admissions", "Jobs admitted to the ready topic, by priority.", ["priority"])
WAITING = Gauge("acefarm_scheduler_waiting", "Jobs the scheduler holds back, waiting for admission.")

# Webhooks
WEBHOOK_ATTEMPTS = Counter(
    "acefarm_webhook_attempts",
    "Webhook delivery attempts by event and result (delivered, failed).",
    ["event", "result"],
)
WEBHOOK_RETRIES = Counter("acefarm_webhook_retries", "Webhook deliveries scheduled for a later attempt.")
WEBHOOK_GAVE_UP = Counter("acefarm_webhook_gave_up", "Webhook deliveries recorded as failed after the retry window.")


@contextmanager
def serving_metrics(port: int | None, host: str) -> Iterator[None]:
    """Serve the default registry on `host:port` (a daemon thread) while the block runs; nothing when `port` is None.

    A port already in use is logged and skipped: metrics never stop a worker from working.
    """
    if port is None:
        yield
        return
    server: WSGIServer | None = None
    try:
        server, _ = start_http_server(port, addr=host)
        log.info("metrics.serving", host=host, port=server.server_port)
    except OSError as error:
        log.warning("metrics.port_unavailable", host=host, port=port, error=str(error))
    try:
        yield
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
