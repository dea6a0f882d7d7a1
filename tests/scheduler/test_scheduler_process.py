"""The scheduler process on the embedded broker: fairness, priorities, dead letters, crash recovery."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer

from schemas import topics
from schemas.events import DeadLetter, GenerationRequested, parse_event
from schemas.generation import GenerationParams
from tests.scheduler.conftest import SCHEDULER_ID, Intake, StandInWorker
from tests.support.processes import Service


def run_id() -> str:
    return uuid.uuid4().hex[:8]


async def test_a_single_job_of_tenant_b_overtakes_tenant_as_backlog(
    start_scheduler: Callable[[], Service], worker: StandInWorker, intake: Intake
) -> None:
    start_scheduler()
    run = run_id()
    backlog = [f"fa-{run}-a-{i:03d}" for i in range(300)]
    await intake.submit_many(backlog, owner="tenant-a")
    await worker.wait_for(lambda: len(worker.order(f"fa-{run}-a-")) >= 10, 60, "A's first admissions")
    a_before_b = len(worker.order(f"fa-{run}-a-"))
    b_job = f"fa-{run}-b-000"
    b_submitted = time.monotonic()
    await intake.submit_many([b_job], owner="tenant-b")
    await worker.wait_for(lambda: b_job in worker.finished, 60, "B's job")
    b_wait = worker.finished[b_job] - b_submitted
    await worker.wait_for(lambda: all(t in worker.finished for t in backlog), 120, "A's backlog")

    order = worker.order(f"fa-{run}-")
    admitted_after_b = order.index(b_job) - a_before_b
    a_drain = max(worker.finished[t] for t in backlog) - b_submitted
    assert admitted_after_b <= 12, f"B came {admitted_after_b} admissions after it arrived"
    assert b_wait < a_drain / 5, (b_wait, a_drain)
    assert sorted(order) == sorted([*backlog, b_job])  # every job exactly once


async def test_high_priority_jobs_are_admitted_ahead_of_batch_ones(
    start_scheduler: Callable[[], Service], worker: StandInWorker, intake: Intake
) -> None:
    start_scheduler()
    run = run_id()
    batch = [f"pr-{run}-l-{i:02d}" for i in range(20)]
    high = [f"pr-{run}-h-{i:02d}" for i in range(20)]
    await intake.submit_many(batch, owner="tenant-l", priority="batch")
    await intake.submit_many(high, owner="tenant-h", priority="high")
    await worker.wait_for(lambda: len(worker.order(f"pr-{run}-")) == 40, 60, "all 40 jobs")

    order = worker.order(f"pr-{run}-")
    last_high = max(order.index(t) for t in high)
    batch_before_last_high = sum(1 for t in order[:last_high] if t in batch)
    # Batch went first until the high jobs arrived, then the weights 4:1 held: ~5 batch per 20 high.
    first_high = order.index(high[0])
    assert batch_before_last_high - first_high <= 8, order
    assert sum(order.index(t) for t in high) < sum(order.index(t) for t in batch)


async def test_invalid_intake_records_are_dead_lettered_and_scheduling_goes_on(
    start_scheduler: Callable[[], Service],
    worker: StandInWorker,
    intake: Intake,
    kafka_env: dict[str, str],
) -> None:
    """Malformed records, and valid requests with no key or another task's key (the one rule for a
    valid record, `schemas.events.validate_record`), are dead-lettered and never reach a GPU worker."""
    start_scheduler()
    run = run_id()
    params = GenerationParams(prompt="a calm sine", duration=1.0)
    wrong_key, no_key = f"wk-{run}", f"nk-{run}"
    await intake.submit_raw(f"bad-{run}".encode(), b"{not json")
    await intake.submit_raw(f"bad2-{run}".encode(), b'{"type": "generation.requested", "task_id": "x"}')
    await intake.submit_raw(f"other-{run}".encode(), GenerationRequested(task_id=wrong_key, params=params).to_bytes())
    await intake.submit_raw(None, GenerationRequested(task_id=no_key, params=params).to_bytes())
    good = f"ok-{run}"
    await intake.submit_many([good])
    await worker.wait_for(lambda: good in worker.finished, 60, "the valid job")

    letters = await read_topic(kafka_env["KAFKA_BOOTSTRAP_SERVERS"], topics.DEAD_LETTER)
    ours = [
        e for e in letters if isinstance(e, DeadLetter) and e.consumer == SCHEDULER_ID and run in (e.key or e.value)
    ]
    assert sorted(e.key or "" for e in ours) == sorted(["", f"bad-{run}", f"bad2-{run}", f"other-{run}"])
    assert all(e.source_topic == topics.GENERATION_REQUESTS for e in ours)
    assert sum("must equal the task id" in e.error for e in ours) == 2
    assert worker.order(f"ok-{run}") == [good]
    assert not {wrong_key, no_key} & {r.task_id for r in worker.received}, "an invalid record reached a GPU worker"


async def test_a_killed_scheduler_loses_nothing_and_duplicates_stay_bounded(
    start_scheduler: Callable[[], Service], worker: StandInWorker, intake: Intake
) -> None:
    first = start_scheduler()
    run = run_id()
    # Two tenants: B's later records are admitted while A's older ones wait, so the committed
    # intake offsets lag the admissions and the restart has to recognise what was admitted.
    jobs_a = [f"kc-{run}-a-{i:03d}" for i in range(80)]
    jobs_b = [f"kc-{run}-b-{i:03d}" for i in range(80)]
    await intake.submit_many(jobs_a, owner="tenant-a")
    await intake.submit_many(jobs_b, owner="tenant-b")
    await worker.wait_for(lambda: len(worker.order(f"kc-{run}-")) >= 40, 60, "40 admissions")
    first.kill()
    second = start_scheduler()
    await worker.wait_for(lambda: set(worker.order(f"kc-{run}-")) == {*jobs_a, *jobs_b}, 120, "every job")
    await asyncio.sleep(1.0)  # anything admitted twice shows up by now

    counts = Counter(worker.order(f"kc-{run}-"))
    duplicates = sum(n - 1 for n in counts.values())
    assert duplicates <= 2, [t for t, n in counts.items() if n > 1]
    # The restart did have admitted-but-uncommitted records to recognise (B's, behind A's waiting ones).
    recovered = [json.loads(line) for line in second.log().splitlines() if "scheduler.recovered" in line]
    assert recovered and recovered[-1]["already_admitted"] > 0, second.log()[-2000:]


async def read_topic(bootstrap: str, topic: str) -> list[object]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        events: list[object] = []
        while batch := await consumer.getmany(timeout_ms=1000):
            for records in batch.values():
                events.extend(parse_event(r.value) for r in records)
        return events
    finally:
        await consumer.stop()
