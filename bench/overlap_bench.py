"""The GPU never waits (issue 14 item 6): the engine's idle time between two queued jobs.

One `python -m acefarm gpu-consumer` with the test `ToneEngine` (`TONE_ENGINE_STEP_S` per fake diffusion
step, 8 steps by default) on a fresh embedded broker; `--jobs` requests are queued on
`acefarm.generation.ready` at once (a backlog), and when all are final the consumer's
`acefarm_engine_idle_seconds` histogram (one observation per handover from one engine call to the next
while a job was waiting) is read from its metrics port. p50 and p90 are interpolated within buckets.

Usage: uv run --frozen python bench/overlap_bench.py [--jobs 100] [--step-s 0.01]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

from acefarm.devtools.broker import EmbeddedBroker, free_port
from acefarm.infra.kafka import ensure_topics
from acefarm.infra.settings import Settings

sys.path.insert(0, str(Path(__file__).parent))
from drain_bench import KAFKA_ENV, Run


def quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """The `q` quantile of a cumulative histogram [(upper bound, count)], linear within a bucket."""
    total = buckets[-1][1]
    target, lower, below = q * total, 0.0, 0.0
    for upper, count in buckets:
        if count >= target:
            share = (target - below) / (count - below) if count > below else 0.0
            return lower + (upper - lower) * share if upper != float("inf") else lower
        lower, below = upper, count
    return lower


async def measure(jobs: int, step_s: float, workdir: Path) -> tuple[list[tuple[float, float]], float, float]:
    """Run the backlog; (cumulative buckets, sum, count) of the engine's idle time."""
    broker = EmbeddedBroker().start()
    port = free_port()
    proc = None
    try:
        bootstrap = broker.bootstrap_servers
        await ensure_topics(Settings(kafka_bootstrap_servers=bootstrap))
        env = dict(
            os.environ,
            KAFKA_BOOTSTRAP_SERVERS=bootstrap,
            LOG_LEVEL="WARNING",
            ENGINE="tests.support.tone_engine:ToneEngine",
            TONE_ENGINE_STEP_S=str(step_s),
            STORAGE_BACKEND="local",
            OUTPUT_DIR=str(workdir),
            METRICS_PORT=str(port),
            **KAFKA_ENV,
        )
        proc = subprocess.Popen([sys.executable, "-m", "acefarm", "gpu-consumer"], env=env)  # noqa: ASYNC220
        async with Run(bootstrap) as run:
            await run.jobs(4, "warm")
            text = httpx.get(f"http://127.0.0.1:{port}/metrics").text  # noqa: ASYNC210
            before = float(re.search(r"acefarm_engine_idle_seconds_count (\S+)", text).group(1))  # type: ignore[union-attr]
            await run.jobs(jobs, "overlap")
        text = httpx.get(f"http://127.0.0.1:{port}/metrics").text  # noqa: ASYNC210
        buckets = [
            (float(le), float(count))
            for le, count in re.findall(r'acefarm_engine_idle_seconds_bucket\{le="([^"]+)"\} (\S+)', text)
        ]
        total = float(re.search(r"acefarm_engine_idle_seconds_sum (\S+)", text).group(1))  # type: ignore[union-attr]
        count = float(re.search(r"acefarm_engine_idle_seconds_count (\S+)", text).group(1))  # type: ignore[union-attr]
        print(f"(warm-up handovers included in the histogram: {before:.0f})")
        return buckets, total, count
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        broker.stop()


def main() -> None:
    """Run the benchmark and print the idle-time figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--step-s", type=float, default=0.01)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="acefarm-overlap-") as workdir:
        buckets, total, count = asyncio.run(measure(args.jobs, args.step_s, Path(workdir)))
    print(
        f"{args.jobs} queued jobs, {args.step_s * 1000:g} ms per step: {count:.0f} handovers, engine idle between jobs "
        f"p50 {quantile(buckets, 0.5) * 1000:.2f} ms, p90 {quantile(buckets, 0.9) * 1000:.2f} ms, "
        f"mean {total / max(count, 1) * 1000:.2f} ms"
    )


if __name__ == "__main__":
    main()
