"""Progress throttling (`ProgressPublisher`): at most `max_hz` events, the first one interval late, and
a final event superseding the unsent report."""

from __future__ import annotations

import asyncio
import itertools
import time

from acefarm.runtime.progress import ProgressPublisher, Report
from schemas.events import TaskProgress
from schemas.status import Stage


class Published:
    """The publish callback: keeps each event with the time it went out."""

    def __init__(self, *, fail: bool = False) -> None:
        self.events: list[tuple[float, TaskProgress]] = []
        self.fail = fail

    async def __call__(self, event: TaskProgress) -> None:
        if self.fail:
            raise ConnectionError("broker gone")
        self.events.append((time.monotonic(), event))

    @property
    def steps(self) -> list[int]:
        return [event.step or 0 for _, event in self.events]


def publisher(published: Published, max_hz: float) -> ProgressPublisher:
    return ProgressPublisher(task_id="t-progress", attempt="a1", publish=published, max_hz=max_hz)


def step(n: int, total: int = 100) -> Report:
    return Report(Stage.DIFFUSION, n / total, n, total)


async def test_reports_from_a_thread_go_out_at_most_max_hz() -> None:
    published = Published()
    started = time.monotonic()
    progress = publisher(published, max_hz=20)

    def work() -> None:
        for n in range(1, 101):
            progress.report(step(n))
            time.sleep(0.006)

    await asyncio.to_thread(work)
    elapsed = time.monotonic() - started
    await progress.close()
    times = [at for at, _ in published.events]
    assert times[0] - started >= 0.045, "the first event waits one interval"
    throttled = times[:-1]  # the last one is the flush on close, sent at once
    assert all(later - earlier >= 0.04 for earlier, later in itertools.pairwise(throttled))
    assert 3 <= len(times) <= elapsed * 20 + 2
    assert published.steps == sorted(published.steps) and published.steps[-1] == 100, "close() flushes the newest"
    assert progress.sent == len(times)


async def test_a_job_shorter_than_one_interval_sends_none() -> None:
    published = Published()
    progress = publisher(published, max_hz=2)
    progress.report_now(step(1))
    progress.report_now(step(2))
    await progress.close(flush=False)
    assert published.events == []


async def test_close_sends_only_the_newest_unsent_report() -> None:
    published = Published()
    progress = publisher(published, max_hz=2)
    for n in (1, 2, 3):
        progress.report_now(step(n))
    await progress.close()
    assert published.steps == [3]


async def test_a_final_event_supersedes_the_unsent_report() -> None:
    published = Published()
    progress = publisher(published, max_hz=20)
    progress.report_now(step(1))
    await asyncio.sleep(0.12)  # the first interval passed: step 1 went out
    progress.report_now(step(2))  # inside the next interval: still pending
    await progress.close(flush=False)
    await asyncio.sleep(0.1)
    assert published.steps == [1]


async def test_bad_reports_and_publish_errors_never_fail_the_job() -> None:
    failing = Published(fail=True)
    progress = publisher(failing, max_hz=50)
    progress.report_now(step(1))
    await asyncio.sleep(0.05)
    await progress.close()
    assert progress.sent == 0

    published = Published()
    progress = publisher(published, max_hz=50)
    progress.report_now(Report(Stage.DIFFUSION, float("nan")))  # dropped: not a valid progress
    progress.report_now(Report(Stage.DIFFUSION, 1.7, 2, 2))  # clamped to 1.0
    await progress.close()
    assert [(event.progress, event.step) for _, event in published.events] == [(1.0, 2)]
