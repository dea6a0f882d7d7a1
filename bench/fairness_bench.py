"""Fairness benchmark: tenant B's single job against tenant A's backlog.

Starts the embedded broker, one `acefarm scheduler` process and a stand-in GPU worker (an aiokafka
consumer in the `gpu-workers` group on the ready topic that "runs" each job for a fixed time and commits
after it). Tenant A submits a backlog straight onto the intake topic, then tenant B submits one job.
Prints B's wait (submit -> finished), how many admissions came before B after it arrived, and the time
A's backlog took to drain, next to what a single FIFO queue would have given B.

Usage: uv run python bench/fairness_bench.py [--backlog 300] [--job-ms 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable

from aiokafka import AIOKafkaProducer

from acefarm.devtools.broker import EmbeddedBroker
from acefarm.devtools.devrun import EMBEDDED_BROKER_ENV
from acefarm.infra.kafka import ensure_topics
from acefarm.infra.settings import Settings
from schemas import topics
from schemas.events import GenerationRequested
from schemas.generation import GenerationParams
from tests.support.stand_in_worker import StandInWorker

GROUP_ENV = {
    **EMBEDDED_BROKER_ENV,
    "KAFKA_PARTITIONS": "4",
    "LOG_LEVEL": "WARNING",
}


async def until(check: Callable[[], bool], timeout_s: float = 600.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("the benchmark stalled")
        await asyncio.sleep(0.01)


async def submit(producer: AIOKafkaProducer, task_ids: list[str], owner: str) -> None:
    params = GenerationParams(prompt="bench", duration=1.0)
    futures = [
        await producer.send(
            topics.GENERATION_REQUESTS,
            GenerationRequested(task_id=t, params=params, owner=owner).to_bytes(),
            key=t.encode(),
        )
        for t in task_ids
    ]
    await asyncio.gather(*futures)


async def measure(bootstrap: str, backlog: int, job_s: float) -> None:
    await ensure_topics(Settings(kafka_bootstrap_servers=bootstrap, kafka_partitions=4))
    worker = StandInWorker(bootstrap, job_s)
    await worker.start()
    done = worker.finished
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        await asyncio.wait_for(worker.joined.wait(), 60)
        run = uuid.uuid4().hex[:6]
        a_jobs = [f"a-{run}-{i:05d}" for i in range(backlog)]
        started = time.monotonic()
        await submit(producer, a_jobs, "tenant-a")
        await until(lambda: len(worker.received) >= 10)
        b_job, a_before = f"b-{run}", len(worker.received)
        b_at = time.monotonic()
        await submit(producer, [b_job], "tenant-b")
        await until(lambda: len(done) >= backlog + 1)
        b_wait = done[b_job] - b_at
        a_drain = max(done[t] for t in a_jobs) - started
        per_job = a_drain / backlog
        print(f"backlog of tenant A       {backlog} jobs, {job_s * 1000:.0f} ms each, one stand-in GPU worker")
        print(f"A's backlog drained in    {a_drain:.2f} s ({backlog / a_drain:.1f} jobs/s)")
        print(f"B's wait (submit->done)   {b_wait:.3f} s")
        print(f"admissions before B       {worker.order('').index(b_job) - a_before} after it arrived")
        print(f"B's wait in one FIFO      ~{(backlog - a_before) * per_job:.2f} s (A's remaining backlog)")
    finally:
        await worker.stop()
        await producer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backlog", type=int, default=300)
    parser.add_argument("--job-ms", type=float, default=20.0)
    args = parser.parse_args()
    with EmbeddedBroker() as broker:
        env = {**os.environ, **GROUP_ENV, "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers}
        scheduler = subprocess.Popen([sys.executable, "-m", "acefarm", "scheduler"], env=env)
        try:
            asyncio.run(measure(broker.bootstrap_servers, args.backlog, args.job_ms / 1000))
        finally:
            scheduler.terminate()
            scheduler.wait(timeout=20)


if __name__ == "__main__":
    main()
