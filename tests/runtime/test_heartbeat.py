"""The heartbeat's current job while the pipelined loop holds two jobs."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer

from acefarm.infra.settings import Settings
from acefarm.runtime.heartbeat import Heartbeat
from acefarm.runtime.identity import WorkerIdentity


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
