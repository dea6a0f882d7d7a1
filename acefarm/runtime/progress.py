"""Throttled progress events: reports from a job's worker thread, `TaskProgress` published from the loop.

Generic: the service says what a report means (stage, step, loss, message) and how to estimate the
time left (`ProgressEta` for a fraction done, `StepRateEta` for steps at a steady rate).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from acefarm.infra.logging import get_logger
from acefarm.runtime.stage_clock import StageClock
from schemas.events import TaskProgress
from schemas.status import Stage

log = get_logger(__name__)


@dataclass(frozen=True)
class Report:
    """One progress report; `progress` is the share of the whole job done (clamped to 0..1)."""

    stage: Stage
    progress: float
    step: int | None = None
    total: int | None = None
    loss: float | None = None
    message: str | None = None


Eta = Callable[[Report], float | None]
"""Seconds left, given a report; called on the event loop when the report arrives."""


class ProgressEta:
    """ETA from the time since the first report of `stage`, extrapolated by its fraction done."""

    def __init__(self, stage: Stage) -> None:
        self._stage = stage
        self._started: float | None = None

    def __call__(self, report: Report) -> float | None:
        """Seconds left in `stage`, or None outside it or before any progress."""
        if report.stage is not self._stage:
            return None
        now = time.monotonic()
        if self._started is None:
            self._started = now
        if report.progress <= 0.0:
            return None
        return round((now - self._started) * (1.0 - report.progress) / report.progress, 1)


class StepRateEta:
    """ETA from the step rate since the first report of `stage` with a step number."""

    def __init__(self, stage: Stage) -> None:
        self._stage = stage
        self._first: tuple[float, int] | None = None

    def __call__(self, report: Report) -> float | None:
        """Seconds until step `total`, or None before two distinct steps were seen."""
        if report.stage is self._stage and report.step is not None and self._first is None:
            self._first = (time.monotonic(), report.step)
        if self._first is None or report.step is None or report.total is None:
            return None
        started, first = self._first
        done = report.step - first
        if done <= 0:
            return None
        return round((time.monotonic() - started) / done * (report.total - report.step), 1)


def no_eta(report: Report) -> None:
    """No estimate."""
    return None


class ProgressPublisher:
    """Coalesces progress reports and publishes at most `max_hz` events per second.

    `report` may be called from any thread (reports that arrive together reach the loop in one hand-off, in
    order); only the newest report is kept between sends. The first
    event goes out one interval after the start, so a job shorter than that sends none; `close()`
    sends the newest unsent report, `close(flush=False)` drops it (a final event supersedes it).
    Publishing errors are logged and never fail the job. Every report's stage is timed for
    `acefarm_stage_seconds`, throttled or not.
    """

    def __init__(
        self,
        *,
        task_id: str,
        attempt: str,
        publish: Callable[[TaskProgress], Awaitable[None]],
        max_hz: float,
        eta: Eta = no_eta,
        stages: StageClock | None = None,
    ) -> None:
        self._task_id = task_id
        self._attempt = attempt
        self._publish = publish
        self._eta = eta
        self._min_interval = 1.0 / max_hz
        self._loop = asyncio.get_running_loop()
        self._pending: TaskProgress | None = None
        self._changed = asyncio.Event()
        self._closing = False
        self._close_requested = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=f"progress-{task_id}")
        self._stages = stages if stages is not None else StageClock(observe=True)
        """The job's stage clock: each report enters its stage when it is made."""
        self._inbox: list[Report] = []
        self._inbox_lock = threading.Lock()
        self.sent = 0

    def report(self, report: Report) -> None:
        """Record a report; thread-safe."""
        if self._closing:
            return
        self._stages.enter(report.stage)
        with self._inbox_lock:
            self._inbox.append(report)
            if len(self._inbox) > 1:  # a hand-off to the loop is already on its way
                return
        with contextlib.suppress(RuntimeError):  # loop closed: the job was abandoned
            self._loop.call_soon_threadsafe(self._take_inbox)

    def _take_inbox(self) -> None:
        with self._inbox_lock:
            reports, self._inbox = self._inbox, []
        self._record(reports)

    def report_now(self, report: Report) -> None:
        """Record a report; must be called on the event loop."""
        if self._closing:
            return
        self._stages.enter(report.stage)
        self._record([report])

    def _record(self, reports: list[Report]) -> None:
        """Feed each report to the estimator, in order; the newest valid one becomes the pending
        event (an invalid report, e.g. a NaN progress, is dropped and never fails the job)."""
        if self._closing:
            return
        noted = []
        for report in reports:
            clamped = replace(report, progress=min(max(report.progress, 0.0), 1.0))
            noted.append((clamped, self._eta(clamped)))
        for report, eta in reversed(noted):
            try:
                self._pending = TaskProgress(
                    task_id=self._task_id,
                    attempt=self._attempt,
                    stage=report.stage,
                    progress=report.progress,
                    step=report.step,
                    total_steps=report.total,
                    loss=report.loss,
                    eta_s=eta,
                    message=report.message,
                )
            except ValueError as error:
                log.warning("progress.invalid_report", error=str(error)[:300])
                continue
            self._changed.set()
            return

    async def close(self, *, flush: bool = True) -> None:
        """Stop; with `flush`, first send the newest report not yet sent."""
        self._stages.stop()
        self._closing = True
        if not flush:
            self._pending = None  # dropped even if the cancel below lands after a wake-up (3.11 wait_for)
        self._close_requested.set()
        if not flush:
            self._task.cancel()
        self._changed.set()
        try:
            await self._task
        except asyncio.CancelledError:
            if not flush:
                return
            raise

    async def _run(self) -> None:
        # The throttle starts with the job: a job over within one interval sends no progress at all,
        # since its final event says more (fewer records for the broker, the fold and every reader).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._close_requested.wait(), self._min_interval)
        while True:
            await self._changed.wait()
            self._changed.clear()
            if self._pending is not None:
                pending, self._pending = self._pending, None
                await self._send(pending)
            if self._closing and self._pending is None:
                return
            if not self._closing:
                # Throttle, but wake at once when the job ends so the last report goes out now.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._close_requested.wait(), self._min_interval)

    async def _send(self, event: TaskProgress) -> None:
        try:
            await self._publish(event)
            self.sent += 1
        except Exception as error:  # progress is best effort
            log.warning("progress.publish_failed", error=str(error))
