"""The heartbeat's current job while the pipelined loop holds two jobs, and how often changes are announced."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from aiokafka import AIOKafkaProducer

from acefarm.infra.kafka import make_consumer, make_producer
from acefarm.infra.settings import Settings
from acefarm.runtime.heartbeat import CHANGE_GAP_S, Heartbeat
from acefarm.runtime.identity import WorkerIdentity
from schemas import topics
from schemas.workers import WorkerHeartbeat


async def test_the_current_job_is_the_oldest_in_flight() -> None:
    identity = WorkerIdentity(worker="w", service="gpu-consumer", topic="t", group_id="g", checkpoint="x", device="cpu")
    beat = Heartbeat.of(AIOKafkaProducer(bootstrap_servers="localhost:1"), Settings(), identity)  # never started
    with beat.working_on("computing"):
        with beat.working_on("prepared"):  # the next job is taken while the first computes
            assert beat.beat.current_task == "computing"
        assert beat.beat.current_task == "computing"
    with beat.working_on("first"):
        next_job = beat.working_on("second")
        next_job.__enter__()
    assert beat.beat.current_task == "second", "the first job ended while the second was being prepared"
    next_job.__exit__(None, None, None)
    assert beat.beat.current_task is None
    assert beat.beat.jobs_done == 4


async def test_changes_close_together_go_out_in_a_few_beats_carrying_the_latest_state(make_settings: Any) -> None:
    settings = make_settings(heartbeat_interval_s=30.0)
    producer = make_producer(settings)
    await producer.start()
    name = f"w-{uuid.uuid4().hex[:8]}"
    identity = WorkerIdentity(
        worker=name, service="gpu-consumer", topic="t", group_id="g", checkpoint="x", device="cpu"
    )
    beat = Heartbeat.of(producer, settings, identity)
    reader = make_consumer(settings, topics.WORKERS, group_id=None)
    await reader.start()
    try:
        beat.start()
        for n in range(50):  # a drain of short jobs
            with beat.working_on(f"task-{n}"):
                await asyncio.sleep(0.005)
        await asyncio.sleep(CHANGE_GAP_S * 2)
        beats = []
        async with asyncio.timeout(10):
            while not beats or beats[-1].jobs_done < 50:
                for records in (await reader.getmany(timeout_ms=500)).values():
                    beats += [WorkerHeartbeat.model_validate_json(r.value) for r in records if r.key == name.encode()]
        assert 2 <= len(beats) <= 10, f"{len(beats)} beats for 100 changes"
        assert (beats[-1].jobs_done, beats[-1].current_task) == (50, None)
    finally:
        await beat.stop()
        await reader.stop()
        await producer.stop()
