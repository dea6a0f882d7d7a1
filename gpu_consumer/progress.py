"""Throttled progress events: engine reports from a worker thread, published from the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from acefarm.logging import get_logger
from schemas.events import TaskProgress
from schemas.status import Stage

log = get_logger(__name__)

Report = tuple[Stage, float, int | None, int | None]


class ProgressPublisher:
    """Coalesces progress reports and publishes at most `max_hz` events per second.

    `report` may be called from any thread; only the newest report is kept between sends, and the
    last one is always sent by `close()`. Publishing errors are logged and never fail the job.
    """

    def __init__(
        self,
        *,
        task_id: str,
        attempt: str,
        publish: Callable[[TaskProgress], Awaitable[None]],
        max_hz: float,
    ) -> None:
        self._task_id = task_id
        self._attempt = attempt
        self._publish = publish
        self._min_interval = 1.0 / max_hz
        self._loop = asyncio.get_running_loop()
        self._pending: Report | None = None
        self._changed = asyncio.Event()
        self._closing = False
        self._close_requested = asyncio.Event()
        self._started = time.monotonic()
        self._diffusion_started: float | None = None
        self._task = asyncio.create_task(self._run(), name=f"progress-{task_id}")
        self.sent = 0

    def report(self, stage: Stage, progress: float, step: int | None = None, total: int | None = None) -> None:
        """Record a report; thread-safe (the engine's `Job.report`)."""
        with contextlib.suppress(RuntimeError):  # loop closed: the job was abandoned
            self._loop.call_soon_threadsafe(self.report_now, stage, progress, step, total)

    def report_now(self, stage: Stage, progress: float, step: int | None = None, total: int | None = None) -> None:
        """Record a report; must be called on the event loop."""
        if self._closing:
            return
        if stage is Stage.DIFFUSION and self._diffusion_started is None:
            self._diffusion_started = time.monotonic()
        self._pending = (stage, min(max(progress, 0.0), 1.0), step, total)
        self._changed.set()

    async def close(self, *, flush: bool = True) -> None:
        """Stop; with `flush`, first send the newest report not yet sent."""
        self._closing = True
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

    async def _send(self, report: Report) -> None:
        stage, progress, step, total = report
        event = TaskProgress(
            task_id=self._task_id,
            attempt=self._attempt,
            stage=stage,
            progress=progress,
            step=step,
            total_steps=total,
            eta_s=self._eta(stage, progress),
            message=f"{stage.value} step {step}/{total}" if step is not None and total else stage.value,
        )
        try:
            await self._publish(event)
            self.sent += 1
        except Exception as error:  # progress is best effort
            log.warning("progress.publish_failed", error=str(error))

    def _eta(self, stage: Stage, progress: float) -> float | None:
        if stage is not Stage.DIFFUSION or self._diffusion_started is None or progress <= 0.0:
            return None
        elapsed = time.monotonic() - self._diffusion_started
        return round(elapsed * (1.0 - progress) / progress, 3)
