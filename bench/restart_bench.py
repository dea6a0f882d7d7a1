"""Restart-to-serving: how long each restarted service takes to serve again.

- **gateway** — with `--tasks` (default 10,000) finished tasks on the status topic: from process start to
  `/readyz` 200, and to `GET /status/{a known task}` 200 (target ≤ 2 s).
- **consumer** — a GPU consumer with the tone engine (no model to load): from process start to its group
  join (`kafka.group_joined`), to the first job taken (its `job.started` log line; target ≤ 3 s, model
  load aside) and to that job seen `running` at the gateway, each minus the engine's load time as the
  consumer logs it (`engine.loaded`).
- **streams, scheduler, webhooks** — from process start to the log lines that say it serves: `streams.ready`
  (its table recovered), `scheduler.ready` + `kafka.group_joined`, `webhooks.started`. The trainer and the
  planner run the GPU consumer's runtime (`run_worker`): their figure is the consumer's plus their model load.

Each is measured `--runs` times on the embedded broker, after one discarded warm-up start that leaves the
project's bytecode compiled (as the image is: UV_COMPILE_BYTECODE=1; installed packages are compiled by
`uv sync`, `[tool.uv] compile-bytecode`); the median and the worst are printed.

    uv run --frozen python bench/restart_bench.py [--tasks 10000] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from aiokafka import AIOKafkaProducer

from acefarm.devtools.broker import EmbeddedBroker, free_port
from acefarm.devtools.devrun import EMBEDDED_BROKER_ENV
from acefarm.infra.kafka import ensure_topics
from acefarm.infra.settings import Settings
from schemas import topics
from schemas.events import TaskStatusRecord
from schemas.status import TaskKind, TaskState, TaskStatus

ROOT = Path(__file__).resolve().parents[1]


async def seed_statuses(bootstrap: str, count: int) -> str:
    """Publish `count` finished task snapshots; returns one task id."""
    await ensure_topics(Settings(kafka_bootstrap_servers=bootstrap))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    await producer.start()
    now = datetime.now(UTC)
    try:
        for n in range(count):
            status = TaskStatus(
                task_id=f"known-{n}", kind=TaskKind.GENERATION, status=TaskState.SUCCESS,
                created_at=now, updated_at=now, version=3, owner="bench",
            )  # fmt: skip
            record = TaskStatusRecord(task_id=status.task_id, status=status)
            await producer.send(topics.TASK_STATUS, record.to_bytes(), key=status.task_id.encode())
        await producer.flush()
    finally:
        await producer.stop()
    return f"known-{count // 2}"


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start `python -m acefarm <args>` logging JSON to `log` (writing bytecode, as a deployed image has it)."""
    full = {**os.environ, "LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1", **env}
    full.pop("PYTHONDONTWRITEBYTECODE", None)
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "acefarm", *args], cwd=ROOT, env=full, stdout=out, stderr=out)


def poll(url: str, timeout_s: float = 120.0) -> None:
    """Wait until `url` answers 200."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.02)
    raise TimeoutError(url)


def gateway_run(env: dict[str, str], known: str, log: Path) -> tuple[float, float]:
    """Seconds from start to /readyz 200 and to the known task's status."""
    port = free_port()
    began = time.monotonic()
    process = start(["gateway", "--port", str(port)], env, log)
    try:
        poll(f"http://127.0.0.1:{port}/readyz")
        ready = time.monotonic() - began
        poll(f"http://127.0.0.1:{port}/status/{known}")
        return ready, time.monotonic() - began
    finally:
        process.terminate()
        process.wait()


def log_event(log: Path, name: str) -> dict[str, object] | None:
    """The first JSON log line of event `name`, if any."""
    for line in log.read_text(errors="replace").splitlines():
        if f'"{name}"' in line:
            try:
                return dict(json.loads(line))
            except ValueError:
                continue
    return None


def consumer_run(env: dict[str, str], gateway: str, log: Path) -> tuple[float, float, float, float]:
    """Seconds from start to the group join, to the first job taken (its `job.started` log line), to that job
    seen running at the gateway (one more hop: streams), and the engine's load time."""
    began, began_at = time.monotonic(), datetime.now(UTC)
    process = start(["gpu-consumer"], env, log)
    try:
        task_id = httpx.post(f"{gateway}/generate", json={"prompt": "bench step_s=0.5", "duration": 1.0}).json()[
            "task_id"
        ]
        joined = running = None
        deadline = time.monotonic() + 120
        while running is None and time.monotonic() < deadline:
            if joined is None and log_event(log, "kafka.group_joined"):
                joined = time.monotonic() - began
            if httpx.get(f"{gateway}/status/{task_id}").json()["status"] != "pending":
                running = time.monotonic() - began
            time.sleep(0.02)
        loaded = log_event(log, "engine.loaded") or {}
        started = log_event(log, "job.started") or {}
        assert joined is not None and running is not None and started, log.read_text()[-2000:]
        taken = (datetime.fromisoformat(str(started["timestamp"])) - began_at).total_seconds()
        return joined, taken, running, float(loaded.get("seconds", 0.0))  # type: ignore[arg-type]
    finally:
        process.terminate()
        process.wait()


SERVICES: dict[str, tuple[str, ...]] = {
    "streams": ("streams.ready",),
    "scheduler": ("scheduler.ready", "kafka.group_joined"),
    "webhooks": ("webhooks.started",),
}
"""Each other service, and the log events that together say it serves."""


def service_run(name: str, env: dict[str, str], log: Path) -> float:
    """Seconds from starting service `name` to the last of its `SERVICES` log events."""
    began = time.monotonic()
    process = start([name], env, log)
    try:
        deadline = began + 120
        while not all(log_event(log, event) for event in SERVICES[name]):
            if time.monotonic() > deadline or process.poll() is not None:
                raise TimeoutError(f"{name} did not serve: {log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.02)
        return time.monotonic() - began
    finally:
        process.terminate()
        process.wait()


def summary(values: list[float]) -> str:
    """Median and worst, in seconds."""
    return f"median {statistics.median(values):.2f} s, worst {max(values):.2f} s"


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    options = parser.parse_args()
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            **EMBEDDED_BROKER_ENV,
            "AUTH_MODE": "off",
            "OUTPUT_DIR": tmp,
            "ENGINE": "tests.support.tone_engine:ToneEngine",
            "LOG_LEVEL": "INFO",
            "WEBHOOK_SECRET": "restart-bench-webhook-secret-0123456789",
        }
        known = asyncio.run(seed_statuses(broker.bootstrap_servers, options.tasks))
        gateway = [gateway_run(env, known, Path(tmp) / f"gateway-{n}.log") for n in range(options.runs + 1)][1:]
        print(f"gateway with {options.tasks} known tasks: /readyz {summary([g[0] for g in gateway])}; "
              f"known task served {summary([g[1] for g in gateway])} (target 2 s)")  # fmt: skip

        for name in SERVICES:
            seconds = [service_run(name, env, Path(tmp) / f"{name}-{n}.log") for n in range(options.runs + 1)][1:]
            print(f"{name}: serving {summary(seconds)} after start")

        port = free_port()
        streams = start(["streams"], env, Path(tmp) / "streams.log")
        scheduler = start(["scheduler"], env, Path(tmp) / "scheduler.log")
        front = start(["gateway", "--port", str(port)], env, Path(tmp) / "gateway.log")
        try:
            poll(f"http://127.0.0.1:{port}/readyz")
            runs = [
                consumer_run(env, f"http://127.0.0.1:{port}", Path(tmp) / f"consumer-{n}.log")
                for n in range(options.runs + 1)
            ][1:]
        finally:
            for process in (front, scheduler, streams):
                process.terminate()
                process.wait()
        taken = summary([r[1] - r[3] for r in runs])
        seen, load = summary([r[2] - r[3] for r in runs]), summary([r[3] for r in runs])
        print(f"consumer: joined {summary([r[0] for r in runs])}; first job taken {taken} (target 3 s), seen running "
              f"at the gateway {seen} after start, engine load ({load}) taken out")  # fmt: skip


if __name__ == "__main__":
    main()
