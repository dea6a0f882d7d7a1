"""Job metrics every long-job worker records: queue wait and outcomes (acefarm.infra.metrics); stage durations
come from `acefarm.runtime.stage_clock`."""

from __future__ import annotations

import time

from aiokafka import ConsumerRecord

from acefarm.infra.metrics import JOB_SECONDS, JOBS, STAGE_SECONDS
from schemas.events import Envelope, TaskFailed

QUEUED = "queued"


def observe_queue_wait(record: ConsumerRecord[bytes, bytes]) -> None:
    """The time from the record's submission to a worker taking it, as stage `queued`."""
    STAGE_SECONDS.labels(QUEUED).observe(max(time.time() - record.timestamp / 1000, 0.0))


def job_kind(request: Envelope) -> str:
    """`generation` or `training`: the request's event type without `.requested`."""
    return str(getattr(request, "type", type(request).__name__)).removesuffix(".requested")


def observe_outcome(request: Envelope, final: object | None, seconds: float) -> None:
    """Count a finished job by kind, outcome (`succeeded`, `failed`, `cancelled`, `forwarded`, `interrupted`)
    and reason; `final` is the final event or the runtime's `Forward`."""
    outcome = "interrupted" if final is None else str(getattr(final, "type", "")).removeprefix("task.")
    outcome = outcome.split(":", 1)[0]
    reason = final.reason if isinstance(final, TaskFailed) else ""
    kind = job_kind(request)
    JOBS.labels(kind, outcome, reason).inc()
    JOB_SECONDS.labels(kind, outcome).observe(seconds)
