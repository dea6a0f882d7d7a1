"""SSE fan-out: many subscribers of `GET /tasks/{id}/events` on one gateway process.

Starts the embedded Tansu broker and one `acefarm gateway` (auth off), publishes a `pending` snapshot for
`--tasks` tasks straight onto the status topic (as `streams` would), then opens `--subscribers` SSE streams
spread evenly over the tasks from `--clients` client processes (asyncio streams on uvloop, `ulimit -n` raised).
Once every stream has its first event it measures the gateway's memory, waits `--idle` seconds, then
publishes a final `success` snapshot for every task at once. Prints:

  * connection set-up: connect → first event, p50/p99/max;
  * the gateway's memory per idle subscriber (RSS after all connected minus before, over subscribers);
  * fan-out: for each subscriber, the delay from the first subscriber of its task seeing the final event
    to it seeing it (p50/p99/max), and the first final seen → the last one (all tasks);
  * keep-alive comments received while idle, and streams that failed.

All clocks are `time.monotonic()`, shared by processes on one machine.

Usage: uv run python bench/sse_bench.py [--subscribers 10000] [--tasks 100] [--clients 2] [--idle 5] [--keepalive 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import uvloop
from pipeline_bench import wait_ready

from acefarm.devtools.broker import EmbeddedBroker, free_port
from acefarm.infra.kafka import ensure_topics, make_producer
from acefarm.infra.settings import Settings
from schemas import topics
from schemas.events import TaskStatusRecord
from schemas.status import StoredFile, TaskState, TaskStatus

READY = "ready"


def raise_open_files() -> None:
    """Raise this process's open-file limit to its hard limit."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def rss_kib(pid: int) -> int:
    """Resident memory of process `pid` in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def snapshot(task_id: str, state: TaskState, version: int) -> bytes:
    """A status-topic record for `task_id` in `state` (a success carries one stored file)."""
    now = datetime.now(UTC)
    files = [StoredFile(key=f"outputs/{task_id}/0.wav", content_type="audio/wav", size_bytes=96044)]
    status = TaskStatus(
        task_id=task_id,
        status=state,
        owner="anonymous",
        files=files if state is TaskState.SUCCESS else [],
        progress=1.0 if state.is_final else 0.0,
        created_at=now,
        updated_at=now,
        version=version,
    )
    return TaskStatusRecord(task_id=task_id, status=status).to_bytes()


async def publish_all(bootstrap: str, task_ids: list[str], state: TaskState, version: int) -> None:
    """One snapshot per task onto the status topic, sent together and acknowledged."""
    settings = Settings(kafka_bootstrap_servers=bootstrap)
    await ensure_topics(settings)
    producer = make_producer(settings)
    await producer.start()
    try:
        sends = [await producer.send(topics.TASK_STATUS, snapshot(t, state, version), key=t.encode()) for t in task_ids]
        await asyncio.gather(*sends)
    finally:
        await producer.stop()


# ---- client process ---------------------------------------------------------------------------------


class Opened:
    """Counts streams that have their first event (or failed); `all` is set once every one has."""

    def __init__(self, total: int) -> None:
        self.left = total
        self.all = asyncio.Event()

    def one(self) -> None:
        """One more stream is open (or gave up)."""
        self.left -= 1
        if self.left == 0:
            self.all.set()


async def subscribe(
    host: str, port: int, task_id: object, out: dict[str, object], gate: asyncio.Semaphore, opened: Opened
) -> None:
    """One SSE stream: connect, note the first event's time, then the final event's time and keep-alives."""
    request = f"GET /tasks/{task_id}/events HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n\r\n"
    try:
        async with gate:
            started = time.monotonic()
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(request.encode())
            await writer.drain()
            buffer = b""
            while b"event: pending" not in buffer:
                chunk = await reader.read(65536)
                if not chunk:
                    raise ConnectionError("closed before the first event")
                buffer += chunk
        out["setup_s"] = time.monotonic() - started
    finally:
        opened.one()
    buffer, keepalives = b"", 0
    while b"event: success" not in buffer:
        chunk = await reader.read(65536)
        if not chunk:
            raise ConnectionError("closed before the final event")
        keepalives += chunk.count(b": keep-alive")
        buffer = buffer[-64:] + chunk
    out["final_at"] = time.monotonic()
    out["keepalives"] = keepalives
    writer.close()


async def client(host: str, port: int, task_ids: list[str], concurrency: int) -> None:
    """Subscribe once per entry of `task_ids`; print READY when all have their first event, then results."""
    gate, opened = asyncio.Semaphore(concurrency), Opened(len(task_ids))
    results: list[dict[str, object]] = [{"task_id": t} for t in task_ids]
    streams = [asyncio.create_task(subscribe(host, port, r["task_id"], r, gate, opened)) for r in results]
    await opened.all.wait()
    print(READY, flush=True)
    done = await asyncio.gather(*streams, return_exceptions=True)
    for r, outcome in zip(results, done, strict=True):
        if isinstance(outcome, BaseException):
            r["error"] = repr(outcome)[:200]
    print(json.dumps(results), flush=True)


# ---- orchestration ----------------------------------------------------------------------------------


def pct(values: list[float], p: float) -> float:
    """The `p`-th percentile (nearest rank) of `values`."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def start_gateway(bootstrap: str, port: int, workdir: Path, keepalive_s: float) -> subprocess.Popen[bytes]:
    """`acefarm gateway` with auth off, `SSE_KEEPALIVE_S=keepalive_s` and a raised open-file limit."""
    env = dict(
        os.environ,
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        KAFKA_BROKER_KIND="embedded",
        OUTPUT_DIR=str(workdir),
        LOG_LEVEL="WARNING",
        AUTH_MODE="off",
        SSE_KEEPALIVE_S=str(keepalive_s),
    )
    return subprocess.Popen(
        [sys.executable, "-m", "acefarm", "gateway", "--port", str(port)], env=env, preexec_fn=raise_open_files
    )


def main() -> None:
    """Run one fan-out measurement and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=256, help="connections each client opens at once")
    parser.add_argument("--idle", type=float, default=5.0)
    parser.add_argument("--keepalive", type=float, default=2.0, help="the gateway's SSE_KEEPALIVE_S")
    parser.add_argument("--client", nargs=3, metavar=("HOST", "PORT", "TASKS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    raise_open_files()
    if args.client:
        host, port, ids = args.client
        uvloop.run(client(host, int(port), ids.split(","), args.concurrency))
        return
    workdir = Path(tempfile.mkdtemp(prefix="acefarm-sse-bench-"))
    broker = EmbeddedBroker().start()
    gateway = None
    clients: list[subprocess.Popen[str]] = []
    try:
        bootstrap, port = broker.bootstrap_servers, free_port()
        run = os.urandom(4).hex()
        task_ids = [f"sse-{run}-{i}" for i in range(args.tasks)]
        asyncio.run(publish_all(bootstrap, task_ids, TaskState.PENDING, 1))
        gateway = start_gateway(bootstrap, port, workdir, args.keepalive)
        wait_ready(f"http://127.0.0.1:{port}")
        time.sleep(1.0)
        before = rss_kib(gateway.pid)
        load = os.getloadavg()[0]
        subs = [task_ids[i % args.tasks] for i in range(args.subscribers)]
        shares = [subs[k :: args.clients] for k in range(args.clients)]
        for share in shares:
            command = [sys.executable, __file__, "--concurrency", str(args.concurrency), "--client", "127.0.0.1"]
            command += [str(port), ",".join(share)]
            clients.append(subprocess.Popen(command, stdout=subprocess.PIPE, text=True))
        for c in clients:
            assert c.stdout is not None
            if c.stdout.readline().strip() != READY:
                raise SystemExit("a client failed before all its streams opened")
        connected_at = time.monotonic()
        time.sleep(1.0)
        after = rss_kib(gateway.pid)
        time.sleep(max(0.0, args.idle - 1.0))
        published = time.monotonic()
        asyncio.run(publish_all(bootstrap, task_ids, TaskState.SUCCESS, 2))
        results: list[dict[str, object]] = []
        for c in clients:
            out, _ = c.communicate(timeout=300)
            results += json.loads(out.strip().splitlines()[-1])
        failed = [r for r in results if "error" in r or "final_at" not in r]
        ok = [r for r in results if "final_at" in r]
        setups = [float(r["setup_s"]) for r in results if "setup_s" in r]  # type: ignore[arg-type]
        first: dict[str, float] = {}
        for r in ok:
            t = str(r["task_id"])
            first[t] = min(first.get(t, float("inf")), float(r["final_at"]))  # type: ignore[arg-type]
        delays = [float(r["final_at"]) - first[str(r["task_id"])] for r in ok]  # type: ignore[arg-type]
        finals = [float(r["final_at"]) for r in ok]  # type: ignore[arg-type]
        print(f"{args.subscribers} subscribers over {args.tasks} tasks, {args.clients} clients (load {load:.1f})")
        if setups:
            print(
                f"set-up (connect → first event): p50 {statistics.median(setups) * 1000:.0f} ms, "
                f"p99 {pct(setups, 99) * 1000:.0f} ms, max {max(setups) * 1000:.0f} ms"
            )
        print(
            f"gateway memory: {before / 1024:.0f} MiB idle, {after / 1024:.0f} MiB with every stream open → "
            f"{(after - before) * 1024 / max(1, len(setups)) / 1000:.1f} KB per subscriber"
        )
        if delays:
            print(
                f"fan-out (first subscriber of a task sees the final event → this one): p50 "
                f"{statistics.median(delays) * 1000:.1f} ms, p99 {pct(delays, 99) * 1000:.1f} ms, "
                f"max {max(delays) * 1000:.1f} ms; published → first seen {(min(finals) - published) * 1000:.0f} ms, "
                f"→ last seen {(max(finals) - published) * 1000:.0f} ms"
            )
        idle_s = published - connected_at
        keepalives = sum(int(r.get("keepalives", 0)) for r in ok)  # type: ignore[call-overload]
        print(f"keep-alive comments while idle {idle_s:.1f} s: {keepalives}; failed streams: {len(failed)}")
        for r in failed[:3]:
            print("  e.g.", r.get("error"))
    finally:
        for c in clients:
            if c.poll() is None:
                c.kill()
        if gateway is not None:
            gateway.send_signal(signal.SIGINT)
            gateway.wait(timeout=30)
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
