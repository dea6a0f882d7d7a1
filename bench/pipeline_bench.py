"""Orchestration benchmark: submit throughput, idle end-to-end latency, null-job drain rate.

Starts `acefarm dev` with the null engine (no model time) on a free port, unless --url points at a
running service, then prints:
  * submit requests/s with p50/p99 latency at 32 concurrent connections (wrk, Debian package),
  * idle end-to-end latency: POST /generate -> success visible over SSE,
  * drain rate of one consumer: N request events produced straight onto Kafka -> N successes.

Usage: uv run python bench/pipeline_bench.py [--url http://host:port --bootstrap host:port]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from acefarm.devtools.broker import EmbeddedBroker, free_port
from schemas import topics
from schemas.events import GenerationRequested, parse_event
from schemas.generation import GenerationParams

BODY = {"prompt": "bench", "duration": 1.0}
WRK_LUA = """wrk.method = "POST"
wrk.body = '{body}'
wrk.headers["Content-Type"] = "application/json"
{headers}"""


def start_stack(bootstrap: str, port: int, workdir: Path) -> subprocess.Popen[bytes]:
    """Run `acefarm dev` with the null engine against `bootstrap`."""
    env = dict(
        os.environ,
        ENGINE="null",
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        OUTPUT_DIR=str(workdir),
        LOG_LEVEL="WARNING",
        KAFKA_BROKER_KIND="embedded",
        KAFKA_SESSION_TIMEOUT_MS="6000",
        KAFKA_REBALANCE_TIMEOUT_MS="3000",
        KAFKA_HEARTBEAT_INTERVAL_MS="1000",
    )
    return subprocess.Popen([sys.executable, "-m", "acefarm", "dev", "--port", str(port), "--no-trainer"], env=env)


@contextlib.contextmanager
def own_dev_stack(prefix: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`acefarm dev` as a developer runs it (its own embedded broker), with the null engine and no trainer: yields
    the process and the gateway URL once ready; stopped as by Ctrl-C afterwards."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    workdir = tempfile.mkdtemp(prefix=prefix)
    env = dict(os.environ, ENGINE="null", OUTPUT_DIR=workdir, LOG_LEVEL="WARNING")
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)  # the stack starts its own embedded broker
    stack = subprocess.Popen(
        [sys.executable, "-m", "acefarm", "dev", "--port", str(port), "--no-trainer"], env=env, cwd=workdir
    )
    try:
        wait_ready(url, timeout_s=180.0)
        yield stack, url
    finally:
        stack.send_signal(signal.SIGINT)
        stack.wait(timeout=60)


def wait_ready(url: str, timeout_s: float = 120.0) -> None:
    """Block until the gateway's /readyz answers 200."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError("gateway not ready")


def submit_throughput(
    url: str, seconds: int, connections: int, headers: dict[str, str] | None = None
) -> dict[str, float]:
    """wrk POST /generate with `connections` connections (and extra `headers`); returns rps, p50_ms, p99_ms."""
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed for the submit benchmark: apt-get install wrk")
    extra = "".join(f'wrk.headers["{name}"] = "{value}"\n' for name, value in (headers or {}).items())
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_LUA.format(body=json.dumps(BODY), headers=extra))
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script.name, f"{url}/generate"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)

    def pct(p: str) -> float:
        value, unit = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    return {"rps": rps, "p50_ms": pct("50"), "p99_ms": pct("99"), "non_2xx": float(non2xx.group(1)) if non2xx else 0}


def e2e_latency(url: str, runs: int) -> list[float]:
    """Seconds from POST /generate to the success event arriving over SSE, per run."""
    samples = []
    with httpx.Client(base_url=url, timeout=60) as client:
        for _ in range(runs):
            start = time.perf_counter()
            task_id = client.post("/generate", json=BODY).json()["task_id"]
            with client.stream("GET", f"/tasks/{task_id}/events") as stream:
                for line in stream.iter_lines():
                    if line.startswith("event:") and line.split(":", 1)[1].strip() == "success":
                        samples.append(time.perf_counter() - start)
                        break
    return samples


async def drain_rate(bootstrap: str, jobs: int) -> float:
    """Jobs/s from the first `started` to the last `succeeded` for `jobs` events produced onto Kafka."""
    run = uuid.uuid4().hex[:8]
    ids = {f"drain-{run}-{i}" for i in range(jobs)}
    consumer = AIOKafkaConsumer(topics.TASK_EVENTS, bootstrap_servers=bootstrap, auto_offset_reset="latest")
    await consumer.start()
    await consumer.getmany(timeout_ms=500)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    params = GenerationParams(prompt="drain", duration=1.0)
    for task_id in ids:
        await producer.send(
            topics.GENERATION_REQUESTS,
            GenerationRequested(task_id=task_id, params=params).to_bytes(),
            key=task_id.encode(),
        )
    await producer.flush()
    first: float | None = None
    done: set[str] = set()
    while done != ids:
        batch = await consumer.getmany(timeout_ms=1000)
        for records in batch.values():
            for record in records:
                event = parse_event(record.value)
                if event.task_id not in ids:
                    continue
                if event.type == "task.started" and first is None:
                    first = time.perf_counter()
                elif event.type == "task.succeeded":
                    done.add(event.task_id)
    last = time.perf_counter()
    await producer.stop()
    await consumer.stop()
    assert first is not None
    return jobs / (last - first)


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url")
    parser.add_argument("--bootstrap")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--e2e-runs", type=int, default=20)
    parser.add_argument("--drain-jobs", type=int, default=500)
    args = parser.parse_args()
    broker = stack = None
    workdir = Path(tempfile.mkdtemp(prefix="acefarm-bench-"))
    try:
        if args.url:
            url, bootstrap = args.url, args.bootstrap
        else:
            broker = EmbeddedBroker().start()
            bootstrap, port = broker.bootstrap_servers, free_port()
            url = f"http://127.0.0.1:{port}"
            stack = start_stack(bootstrap, port, workdir)
        wait_ready(url)
        e2e_latency(url, 2)  # warm-up: group join, first SSE subscription
        lat = e2e_latency(url, args.e2e_runs)
        print(
            f"idle end-to-end (submit -> success over SSE), {len(lat)} runs: "
            f"p50 {statistics.median(lat) * 1000:.1f} ms, min {min(lat) * 1000:.1f} ms, max {max(lat) * 1000:.1f} ms"
        )
        if bootstrap:
            rate = asyncio.run(drain_rate(bootstrap, args.drain_jobs))
            print(f"null-job drain, one consumer, {args.drain_jobs} jobs: {rate:.0f} jobs/s")
        sub = submit_throughput(url, args.seconds, args.connections)
        print(
            f"submit POST /generate, {args.connections} connections, {args.seconds}s (wrk): {sub['rps']:.0f} req/s, "
            f"p50 {sub['p50_ms']:.1f} ms, p99 {sub['p99_ms']:.1f} ms, non-2xx {sub['non_2xx']:.0f}"
        )
    finally:
        if stack is not None:
            stack.send_signal(signal.SIGINT)
            stack.wait(timeout=30)
        if broker is not None:
            broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
