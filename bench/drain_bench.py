"""Drain near the floor (issue 14 item 2): jobs/s of real GPU consumers next to a minimal aiokafka loop.

For each consumer count (default 1, 2, 4) and each kind, a fresh embedded broker is started (so no
group offsets or old records carry over), K workers join, warm-up jobs run until every worker has
started one, then `--jobs` `GenerationRequested` events (1 s of audio) are produced onto
`acefarm.generation.ready` (no scheduler: the consumer's own orchestration) and jobs/s is taken from the
first `task.started` to the last final event.

- floor: K processes of this script (`--floor-worker`), each a minimal aiokafka loop doing the same
  durable steps: consume one request, produce `task.started` and `task.succeeded` (acks=all, the final
  one awaited), commit its offset.
- consumer: K `python -m acefarm gpu-consumer` processes with `ENGINE=null` (a 1 s tone, WAV, fsync'd in
  local storage; the null engine's tone is one read-only array, so it is encoded once, not per job),
  `LOG_LEVEL=WARNING`, `MAX_BATCH` at its default (4: queued requests this alike share an engine call).

What the floor leaves out and the consumer does per job: the take stored (fsync'd), the attempt record read at
pickup and written at the start and the ending (not fsync'd), `TaskStarted` awaited before the engine call
(the floor only enqueues it), a cancel catch-up (one end-offsets request per batch), the deadline watchdog,
progress and metrics. The floor commits after every job; the consumer coalesces commits.

Usage: uv run --frozen python bench/drain_bench.py [--jobs 300] [--consumers 1 2 4] [--kinds floor consumer]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from acefarm.devtools.broker import EmbeddedBroker
from acefarm.infra.kafka import ensure_topics
from acefarm.infra.settings import Settings
from schemas import topics
from schemas.events import GenerationRequested, TaskStarted, TaskSucceeded, parse_event
from schemas.generation import GenerationParams

FINALS = {"task.succeeded", "task.failed", "task.cancelled"}
KAFKA_ENV = {
    "KAFKA_BROKER_KIND": "embedded",
    "KAFKA_SESSION_TIMEOUT_MS": "6000",
    "KAFKA_REBALANCE_TIMEOUT_MS": "3000",
    "KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
}


async def floor_worker(bootstrap: str, name: str) -> None:
    """The floor: consume a request, produce `started` and the final event (acks=all), commit; forever."""
    settings = Settings(kafka_bootstrap_servers=bootstrap, **{k.lower(): v for k, v in KAFKA_ENV.items()})
    consumer = AIOKafkaConsumer(
        topics.GENERATION_READY,
        bootstrap_servers=bootstrap,
        group_id="drain-floor",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=1,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await producer.start()
    await consumer.start()
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=1000, max_records=1)
            for tp, records in batch.items():
                for record in records:
                    request = GenerationRequested.model_validate_json(record.value or b"")
                    key = request.task_id.encode()
                    started = TaskStarted(task_id=request.task_id, attempt="floor", worker=name)
                    await producer.send(topics.TASK_EVENTS, started.to_bytes(), key=key)
                    final = TaskSucceeded(task_id=request.task_id, attempt="floor")
                    await producer.send_and_wait(topics.TASK_EVENTS, final.to_bytes(), key=key)
                    await consumer.commit({TopicPartition(tp.topic, tp.partition): record.offset + 1})
    finally:
        await consumer.stop()
        await producer.stop()


class Run:
    """One measurement: produce jobs, follow their lifecycle events."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.events = AIOKafkaConsumer(topics.TASK_EVENTS, bootstrap_servers=bootstrap, auto_offset_reset="latest")
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)

    async def __aenter__(self) -> Run:
        await self.events.start()
        await self.events.getmany(timeout_ms=500)
        await self.producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.producer.stop()
        await self.events.stop()

    async def jobs(self, count: int, prefix: str, timeout_s: float = 300.0) -> tuple[float, set[str]]:
        """Produce `count` jobs and wait for their final events; (seconds first started → last final, workers)."""
        params = GenerationParams(prompt="drain", duration=1.0)
        ids = {f"{prefix}-{uuid.uuid4().hex[:8]}-{i}" for i in range(count)}
        for task_id in ids:
            event = GenerationRequested(task_id=task_id, params=params)
            await self.producer.send(topics.GENERATION_READY, event.to_bytes(), key=task_id.encode())
        await self.producer.flush()
        first: float | None = None
        workers: set[str] = set()
        done: set[str] = set()
        deadline = time.monotonic() + timeout_s
        while done != ids:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(ids) - len(done)} of {count} jobs not final after {timeout_s} s")
            for records in (await self.events.getmany(timeout_ms=1000)).values():
                for record in records:
                    event = parse_event(record.value or b"")
                    if event.task_id not in ids:
                        continue
                    if event.type == "task.started":
                        first = first or time.perf_counter()
                        workers.add(event.worker)
                    elif event.type in FINALS:
                        done.add(event.task_id)
        assert first is not None
        return time.perf_counter() - first, workers


def start_workers(kind: str, count: int, bootstrap: str, workdir: Path) -> list[subprocess.Popen[bytes]]:
    """Start `count` workers of `kind` (floor or consumer)."""
    env = dict(os.environ, KAFKA_BOOTSTRAP_SERVERS=bootstrap, LOG_LEVEL="WARNING", **KAFKA_ENV)
    procs = []
    for n in range(count):
        if kind == "floor":
            args = [sys.executable, __file__, "--floor-worker", bootstrap, f"floor-{n}"]
        else:
            env.update(ENGINE="null", STORAGE_BACKEND="local", OUTPUT_DIR=str(workdir / f"out-{n}"))
            env["WORKER_ID"] = f"consumer-{n}"
            args = [sys.executable, "-m", "acefarm", "gpu-consumer"]
        procs.append(subprocess.Popen(args, env=dict(env)))
    return procs


async def measure(kind: str, count: int, jobs: int, workdir: Path) -> float:
    """Jobs/s of `count` workers of `kind` on a fresh broker."""
    broker = EmbeddedBroker().start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        bootstrap = broker.bootstrap_servers
        await ensure_topics(Settings(kafka_bootstrap_servers=bootstrap))
        procs = start_workers(kind, count, bootstrap, workdir)
        async with Run(bootstrap) as run:
            for _ in range(30):  # warm up until every worker has started a job (group settled)
                _, workers = await run.jobs(8 * count, "warm")
                if len(workers) == count:
                    break
            else:
                raise RuntimeError(f"only {len(workers)} of {count} workers took jobs")
            seconds, _ = await run.jobs(jobs, "drain")
        return jobs / seconds
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        broker.stop()


def main() -> None:
    """Run the benchmark and print a table row per consumer count."""
    if len(sys.argv) == 4 and sys.argv[1] == "--floor-worker":
        with_signals = asyncio.new_event_loop()
        task = with_signals.create_task(floor_worker(sys.argv[2], sys.argv[3]))
        with_signals.add_signal_handler(signal.SIGTERM, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            with_signals.run_until_complete(task)
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--consumers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--kinds", nargs="+", default=["floor", "consumer"], choices=["floor", "consumer"])
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="acefarm-drain-"))
    try:
        for count in args.consumers:
            rates = {kind: asyncio.run(measure(kind, count, args.jobs, workdir)) for kind in args.kinds}
            line = ", ".join(f"{kind} {rate:.0f} jobs/s ({1000 / rate:.1f} ms/job)" for kind, rate in rates.items())
            ratio = f", per-job time {rates['floor'] / rates['consumer']:.2f}x the floor" if len(rates) == 2 else ""
            print(f"{count} worker(s), {args.jobs} jobs: {line}{ratio}", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
