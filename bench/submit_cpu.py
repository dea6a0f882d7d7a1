"""App CPU per `POST /generate`, in process: the ASGI app called directly, no HTTP server, no wrk.

Load from other work on a shared machine disturbs wrk's figures 2× either way; the CPU this process spends
per request (`time.process_time`) barely moves. Starts the embedded broker, runs the gateway app's lifespan
(auth off, `MAX_QUEUED_JOBS=0`, so every 202 waits for an `acks=all` publish), warms up, then sends
`--requests` requests from `--callers` concurrent callers and prints µs of CPU and wall time per request.
`--floor` measures `floor_app.py`'s bare route the same way; `--profile FILE` writes cProfile stats.

Usage: uv run python bench/submit_cpu.py [--requests 8000] [--callers 32] [--floor] [--profile FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop
from floor_app import generate as floor_route
from litestar import Litestar
from pipeline_bench import BODY

from acefarm.devtools.broker import EmbeddedBroker
from acefarm.infra.logging import configure_logging
from acefarm.infra.settings import Settings
from gateway.app import create_app

HEADERS = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json")]


async def post_generate(app: Any, body: bytes) -> int:
    """One `POST /generate` through the ASGI app; the response's status code."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/generate",
        "raw_path": b"/generate",
        "root_path": "",
        "query_string": b"",
        "headers": [*HEADERS, (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    sent = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.Event().wait()  # no disconnect while the request runs
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def load(app: Any, requests: int, callers: int) -> tuple[float, float]:
    """`requests` submissions from `callers` concurrent callers; (CPU seconds, wall seconds)."""
    body = json.dumps(BODY).encode()
    left = requests

    async def caller() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            status = await post_generate(app, body)
            if status != 202:
                raise SystemExit(f"POST /generate answered {status}")

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    return time.process_time() - cpu, time.perf_counter() - wall


async def measure(app: Litestar, args: argparse.Namespace) -> None:
    """Run the app's lifespan, warm up, measure (under cProfile with `--profile`), print."""
    async with app.lifespan():
        await load(app, 500, args.callers)
        profiler = cProfile.Profile() if args.profile else None
        if profiler is not None:
            profiler.enable()
        cpu, wall = await load(app, args.requests, args.callers)
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)
    name = "floor" if args.floor else "gateway"
    print(
        f"{name}: {cpu / args.requests * 1e6:.0f} µs CPU, {wall / args.requests * 1e6:.0f} µs wall per request "
        f"({args.requests} requests, {args.callers} callers, load {os.getloadavg()[0]:.1f})"
    )


def main() -> None:
    """Measure the gateway (or the floor) app."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=8000)
    parser.add_argument("--callers", type=int, default=32)
    parser.add_argument("--floor", action="store_true", help="measure floor_app.py's bare route instead")
    parser.add_argument("--profile", help="write cProfile stats of the measured requests to this file")
    args = parser.parse_args()
    if args.floor:
        uvloop.run(measure(Litestar(route_handlers=[floor_route], logging_config=None), args))
        return
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as workdir:
        settings = Settings(
            kafka_bootstrap_servers=broker.bootstrap_servers,
            kafka_broker_kind="embedded",
            output_dir=Path(workdir),
            auth_mode="off",
            max_queued_jobs=0,
            log_level="WARNING",
        )
        configure_logging("gateway", settings.log_level, settings.log_format)
        uvloop.run(measure(create_app(settings), args))


if __name__ == "__main__":
    main()
