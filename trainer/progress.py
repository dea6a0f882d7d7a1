"""Throttled training progress: reports come from the training thread, events leave from the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from acefarm.logging import get_logger
from schemas.events import TaskProgress
from schemas.status import Stage

log = get_logger(__name__)


@dataclass(frozen=True)
class Report:
    """One progress report."""

    stage: Stage
    progress: float
    step: int | None = None
    total: int | None = None
    loss: float | None = None
    message: str | None = None


class TrainingProgress:
    """Publishes the newest report at most `max_hz` times a second, with an ETA from the step rate.

    `report` is thread-safe; `close()` sends the last report not yet sent. Publish errors are logged.
    """

    def __init__(
        self, *, task_id: str, attempt: str, publish: Callable[[TaskProgress], Awaitable[None]], max_hz: float
    ) -> None:
        self._task_id, self._attempt, self._publish = task_id, attempt, publish
        self._interval = 1.0 / max_hz
        self._loop = asyncio.get_running_loop()
        self._pending: Report | None = None
        self._wake = asyncio.Event()
        self._closing = False
        self._close_requested = asyncio.Event()
        self._rate_start: tuple[float, int] | None = None
        self._task = asyncio.create_task(self._run(), name=f"progress-{task_id}")
        self.sent = 0

    def report(self, report: Report) -> None:
        """Record a report from any thread."""
        with contextlib.suppress(RuntimeError):  # loop closed: the job was abandoned
            self._loop.call_soon_threadsafe(self._set, report)

    def _set(self, report: Report) -> None:
        if self._closing:
            return
        if report.stage is Stage.TRAINING and report.step is not None and self._rate_start is None:
            self._rate_start = (time.monotonic(), report.step)
        self._pending = report
        self._wake.set()

    async def close(self, *, flush: bool = True) -> None:
        """Stop; with `flush`, first send the newest unsent report."""
        if not flush:
            self._pending = None
        self._closing = True
        self._close_requested.set()
        self._wake.set()
        await self._task

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._pending is not None:
                report, self._pending = self._pending, None
                await self._send(report)
            if self._closing:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._close_requested.wait(), self._interval)

    async def _send(self, report: Report) -> None:
        event = TaskProgress(
            task_id=self._task_id,
            attempt=self._attempt,
            stage=report.stage,
            progress=min(max(report.progress, 0.0), 1.0),
            step=report.step,
            total_steps=report.total,
            loss=report.loss,
            eta_s=self._eta(report),
            message=report.message,
        )
        try:
            await self._publish(event)
            self.sent += 1
        except Exception as error:  # progress is best effort
            log.warning("progress.publish_failed", error=str(error))

    def _eta(self, report: Report) -> float | None:
        if self._rate_start is None or report.step is None or report.total is None:
            return None
        started, first = self._rate_start
        done = report.step - first
        if done <= 0:
            return None
        return round((time.monotonic() - started) / done * (report.total - report.step), 1)
