"""Queue position and ETA of pending jobs: a real scheduler process and a stand-in GPU worker behind the test
gateway; the position falls as jobs drain, over GET /status and over SSE. Plus the gateway's estimate for
tasks beyond a snapshot's listed head, and which moves are worth a push (pure)."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from gateway.queue_view import beyond_head, moved
from schemas.queues import LaneSnapshot, QueuedTask, QueuePosition, QueueSnapshot, queue_positions
from schemas.tenancy import Priority
from tests.consumer.conftest import wait_for_log
from tests.gateway.test_tasks import sse_events
from tests.scheduler.conftest import SCHEDULER_ARGS, StandInWorker, scheduler_env
from tests.support.processes import start_service

JOB = {"prompt": "a calm sine", "duration": 1}
JOBS = 10
WORK_S = 0.6


def lane(owner: str, length: int, aheads: list[int]) -> LaneSnapshot:
    head = [QueuedTask(task_id=f"{owner}{n}", ahead=ahead) for n, ahead in enumerate(aheads)]
    return LaneSnapshot(owner=owner, priority=Priority.NORMAL, length=length, head=head)


def test_a_task_beyond_the_listed_head_is_estimated_from_its_lane() -> None:
    # a has 10 waiting and b 3: they alternate (a0 b0 a1 b1 ...) until b runs dry.
    snapshot = QueueSnapshot(
        scheduler="s",
        partitions=[0],
        published_at=datetime.now(UTC),
        waiting=13,
        lanes=[lane("a", 10, [0, 2, 4]), lane("b", 3, [1, 3, 5])],
        ready_backlog=2,
        consumers=1,
        admitted_per_s=2.0,
    )
    live = [snapshot]
    positions = queue_positions(live)
    assert positions["a2"] == QueuePosition(1 + 4, 3.0)
    # a's 6th task (place 5): four of a's pending tasks came after it; one place adds two jobs ahead.
    assert beyond_head(live, positions, "a", after=4) == QueuePosition(5 + 3 * 2, 6.0)
    # Its last task: the extrapolation (5 + 7 * 2) is capped at everything waiting (1 in ready + 13 - 1).
    assert beyond_head(live, positions, "a", after=0) == QueuePosition(13, 7.0)
    assert beyond_head(live, positions, "b", after=0) is None  # b's whole lane is listed
    assert beyond_head(live, positions, "c", after=0) is None


def test_small_moves_count_near_the_front_and_ten_percent_further_back() -> None:
    assert moved(QueuePosition(3, 5.0), QueuePosition(2, 4.0))
    assert not moved(QueuePosition(3, 5.0), QueuePosition(3, 4.0))
    assert not moved(QueuePosition(100, 50.0), QueuePosition(95, 45.0))
    assert moved(QueuePosition(100, 50.0), QueuePosition(90, 45.0))
    assert moved(QueuePosition(1, 1.0), None)
    assert not moved(None, None)


async def positions_until(client: httpx.AsyncClient, task_id: str, done: asyncio.Event) -> list[int | None]:
    """Poll the task's queue position every 100 ms until `done`."""
    seen: list[int | None] = []
    while not done.is_set():
        seen.append((await client.get(f"/status/{task_id}")).json()["queue_position"])
        await asyncio.sleep(0.1)
    return seen


async def sse_pending(client: httpx.AsyncClient, task_id: str, into: list[dict[str, Any]]) -> None:
    """Append every event of the task's stream to `into` (cancel to stop)."""
    async with client.stream("GET", f"/tasks/{task_id}/events") as response:
        async for event in sse_events(response):
            if event.data is not None:
                into.append(event.data)


async def wait_for(check: Any, timeout_s: float, what: str) -> None:
    for _ in range(int(timeout_s * 10)):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {what}")


async def test_a_pending_job_shows_its_position_falling_as_jobs_drain(
    client: httpx.AsyncClient, kafka_env: dict[str, str], tmp_path: Path
) -> None:
    scheduler = start_service(
        "scheduler", SCHEDULER_ARGS, scheduler_env(kafka_env, SCHEDULER_SNAPSHOT_TOP="3"), tmp_path
    )
    worker = StandInWorker(kafka_env["KAFKA_BOOTSTRAP_SERVERS"], delay_s=0.01)
    reader: asyncio.Task[None] | None = None
    try:
        await asyncio.to_thread(wait_for_log, scheduler, "kafka.group_joined")
        await worker.start()
        await asyncio.wait_for(worker.joined.wait(), 30)
        # Jobs other tests left on the intake topic go first, quickly; then each job takes WORK_S.
        marker = (await client.post("/generate", json=JOB)).json()["task_id"]
        await worker.wait_for(lambda: marker in worker.finished, 120, "older jobs to drain")
        worker.delay_s = WORK_S
        task_ids = [(await client.post("/generate", json=JOB)).json()["task_id"] for _ in range(JOBS)]
        last = task_ids[-1]

        async def far_back() -> bool:
            body = (await client.get(f"/status/{last}")).json()
            return body["status"] == "pending" and (body["queue_position"] or 0) >= JOBS - 4

        # One job runs, one waits in the ready topic, the rest in the scheduler: the last is beyond the
        # 3 tasks a snapshot lists, so its position is the gateway's estimate.
        await wait_for(far_back, 30, "the last job's queue position")
        streamed: list[dict[str, Any]] = []
        reader = asyncio.create_task(sse_pending(client, last, streamed))
        drained = asyncio.Event()
        polling = asyncio.create_task(positions_until(client, last, drained))
        await worker.wait_for(lambda: set(task_ids) <= set(worker.finished), 90, "every job to run")
        drained.set()
        polled = [p for p in await polling if p is not None]
    finally:
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        await worker.stop()
        scheduler.stop()

    assert polled == sorted(polled, reverse=True), f"the position went back up: {polled}"
    assert len(set(polled)) >= 3, polled
    positions = [event["queue_position"] for event in streamed]
    assert all(event["status"] == "pending" for event in streamed)
    numbers = [p for p in positions if p is not None]
    assert len(set(numbers)) >= 3 and numbers == sorted(numbers, reverse=True), positions
    assert positions[-1] is None  # admitted to the GPU's queue: no longer in the scheduler's
    assert any(event["eta_s"] for event in streamed), streamed
    assert len({event["version"] for event in streamed}) == 1  # position moves are not new versions
