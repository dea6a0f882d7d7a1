"""Cost at scale: the gateway with 0, 10k and 100k known tasks, and a consumer's per-job time with a small
vs a large backlog.

Known tasks: for each count, a fresh embedded broker whose status topic is pre-filled with that many
final snapshots (as `streams` would have left them, 12 owners), then one `acefarm gateway` (auth off):
time until `/readyz` (the status view has read the topic), its memory once ready, submit throughput (wrk,
32 connections) and its memory after. Backlog: `acefarm dev` with the null engine on a fresh broker;
`--small` request events produced at once, drained (repeated 3 times, median), then `--large`; per-job
time is (last `succeeded` − first `started`) / jobs, as in `pipeline_bench.py`.

Usage: uv run python bench/scale_bench.py [--known 0 10000 100000] [--small 10] [--large 10000] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from pipeline_bench import drain_rate, start_stack, submit_throughput, wait_ready
from sse_bench import rss_kib
from submit_bench import start_gateway

from acefarm.devtools.broker import EmbeddedBroker, free_port
from acefarm.infra.kafka import ensure_topics, make_producer
from acefarm.infra.settings import Settings
from schemas import topics
from schemas.events import TaskStatusRecord
from schemas.status import StoredFile, TaskState, TaskStatus


async def prefill(bootstrap: str, count: int) -> None:
    """`count` final snapshots (success, one stored file, 12 owners) onto the status topic."""
    settings = Settings(kafka_bootstrap_servers=bootstrap)
    await ensure_topics(settings)
    producer = make_producer(settings, linger_ms=20, max_batch_size=1 << 20)
    await producer.start()
    now = datetime.now(UTC)
    try:
        pending = []
        for i in range(count):
            task_id = f"known-{i:06d}"
            status = TaskStatus(
                task_id=task_id,
                status=TaskState.SUCCESS,
                owner=f"owner-{i % 12}",
                progress=1.0,
                files=[StoredFile(key=f"outputs/{task_id}/0.wav", content_type="audio/wav", size_bytes=96044)],
                created_at=now,
                updated_at=now,
                version=3,
            )
            record = TaskStatusRecord(task_id=task_id, status=status).to_bytes()
            pending.append(await producer.send(topics.TASK_STATUS, record, key=task_id.encode()))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


def known_tasks(count: int, seconds: int) -> None:
    """Gateway start-up, memory and submit throughput with `count` known tasks; prints one line."""
    workdir = Path(tempfile.mkdtemp(prefix="acefarm-scale-bench-"))
    broker = EmbeddedBroker().start()
    gateway = None
    try:
        started = time.monotonic()
        asyncio.run(prefill(broker.bootstrap_servers, count))
        filled = time.monotonic() - started
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        started = time.monotonic()
        gateway = start_gateway(broker.bootstrap_servers, port, workdir, 0)
        wait_ready(url, timeout_s=600)
        ready_s = time.monotonic() - started
        ready_kib = rss_kib(gateway.pid)
        load = os.getloadavg()[0]
        sub = submit_throughput(url, seconds, 32)
        print(
            f"known tasks {count:6}: pre-filled in {filled:.1f} s; gateway ready in {ready_s:.1f} s, "
            f"{ready_kib / 1024:.0f} MiB; submit {sub['rps']:.0f} req/s p50 {sub['p50_ms']:.1f} ms "
            f"p99 {sub['p99_ms']:.1f} ms; {rss_kib(gateway.pid) / 1024:.0f} MiB after (load {load:.1f})",
            flush=True,
        )
    finally:
        if gateway is not None:
            gateway.send_signal(signal.SIGINT)
            gateway.wait(timeout=30)
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def backlog(small: int, large: int) -> None:
    """A consumer's per-job time draining `small` vs `large` queued jobs; prints one line each."""
    workdir = Path(tempfile.mkdtemp(prefix="acefarm-scale-bench-"))
    broker = EmbeddedBroker().start()
    stack = None
    try:
        port = free_port()
        stack = start_stack(broker.bootstrap_servers, port, workdir)
        wait_ready(f"http://127.0.0.1:{port}")
        asyncio.run(drain_rate(broker.bootstrap_servers, small))  # warm-up: group joins, first fetches
        for jobs in (small, large):
            load = os.getloadavg()[0]
            rates = [asyncio.run(drain_rate(broker.bootstrap_servers, jobs)) for _ in range(3 if jobs == small else 1)]
            rate = statistics.median(rates)
            print(f"backlog {jobs:6} jobs: {rate:.0f} jobs/s, {1000 / rate:.1f} ms/job (load {load:.1f})", flush=True)
    finally:
        if stack is not None:
            stack.send_signal(signal.SIGINT)
            stack.wait(timeout=60)
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    """Run both parts and print their figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--known", type=int, nargs="*", default=[0, 10_000, 100_000])
    parser.add_argument("--small", type=int, default=10)
    parser.add_argument("--large", type=int, default=10_000)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--skip-backlog", action="store_true")
    args = parser.parse_args()
    for count in args.known:
        known_tasks(count, args.seconds)
    if not args.skip_backlog:
        backlog(args.small, args.large)


if __name__ == "__main__":
    main()
