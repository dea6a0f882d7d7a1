"""Job metrics every long-job worker records: queue wait, stage durations, outcomes (acefarm.infra.metrics)."""

from __future__ import annotations

import time

from aiokafka import ConsumerRecord

from acefarm.infra.metrics import JOB_SECONDS, JOBS, STAGE_SECONDS
from schemas.events import Envelope, TaskFailed
from schemas.status import Stage

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


class StageClock:
    """Times the stages a job's progress reports pass through; each stage's time is observed when it ends."""

    def __init__(self) -> None:
        self._stage: Stage | None = None
        self._since = 0.0

    def mark(self, stage: Stage) -> None:
        """A report of `stage` arrived: a new stage ends the previous one."""
        if stage is self._stage:
            return
        now = time.monotonic()
        self._observe(now)
        self._stage, self._since = stage, now

    def stop(self) -> None:
        """The job is over: the current stage ends now."""
        self._observe(time.monotonic())
        self._stage = None

    def _observe(self, now: float) -> None:
        if self._stage is not None:
            STAGE_SECONDS.labels(self._stage.value).observe(now - self._since)
