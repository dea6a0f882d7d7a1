"""Where an idle job's latency goes: the time of each hop of `POST /generate` -> `success` over SSE.

Starts `acefarm dev` (embedded broker, `ENGINE=null`), runs a few warm-up jobs, then `--runs` jobs one at a time
after `--gap` seconds of quiet each. Afterwards it reads every record of each job from the four topics it
crosses and prints, per job and as medians, milliseconds from the POST to: the 202, the request record
(gateway), the admitted record (scheduler), `task.started` and the final event (GPU consumer), the last status
snapshot (streams) and the `success` event seen over SSE (gateway). Record times are the producers' create
times (millisecond resolution), on the same machine as the client.

Usage: uv run python bench/hops_bench.py [--runs 12] [--gap 1.5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time

import httpx
from aiokafka import AIOKafkaConsumer
from idle_bench import BODY, bootstrap_of, children
from pipeline_bench import own_dev_stack

from schemas import topics

HOPS = (topics.GENERATION_REQUESTS, topics.GENERATION_READY, topics.TASK_EVENTS, topics.TASK_STATUS)


def one_job(client: httpx.Client) -> tuple[str, float, float, float]:
    """(task id, POST sent, 202 received, `success` seen over SSE), wall-clock seconds."""
    sent = time.time()
    task_id = client.post("/generate", json=BODY).json()["task_id"]
    accepted = time.time()
    with client.stream("GET", f"/tasks/{task_id}/events") as stream:
        for line in stream.iter_lines():
            if line.startswith("event:") and line.split(":", 1)[1].strip() == "success":
                return task_id, sent, accepted, time.time()
    raise RuntimeError(f"{task_id}: stream ended without success")


async def records(bootstrap: str) -> list[tuple[str, float, bytes]]:
    """(topic, create time in seconds, value) of every record on the hops' topics."""
    consumer = AIOKafkaConsumer(*HOPS, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    found: list[tuple[str, float, bytes]] = []
    try:
        while batches := await consumer.getmany(timeout_ms=2000):
            for tp, batch in batches.items():
                found += [(tp.topic, record.timestamp / 1000, record.value or b"") for record in batch]
    finally:
        await consumer.stop()
    return found


def hops_ms(job: tuple[str, float, float, float], found: list[tuple[str, float, bytes]]) -> dict[str, float]:
    """Milliseconds from the POST to each hop of one job."""
    task_id, sent, accepted, seen = job
    mine = [(topic, at, value) for topic, at, value in found if task_id.encode() in value]

    def at(topic: str, last: bool = False) -> float:
        times = [t for tp, t, _ in mine if tp == topic]
        return ((max(times) if last else min(times)) - sent) * 1000

    started = [t for tp, t, v in mine if tp == topics.TASK_EVENTS and json.loads(v).get("type") == "task.started"]
    return {
        "202": (accepted - sent) * 1000,
        "request": at(topics.GENERATION_REQUESTS),
        "admitted": at(topics.GENERATION_READY),
        "started": (min(started) - sent) * 1000,
        "final": at(topics.TASK_EVENTS, last=True),
        "snapshot": at(topics.TASK_STATUS, last=True),
        "sse": (seen - sent) * 1000,
    }


def main() -> None:
    """Run the jobs and print each hop's time."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--gap", type=float, default=1.5, help="quiet seconds before each job")
    args = parser.parse_args()
    with own_dev_stack("acefarm-hops-") as (stack, url):
        with httpx.Client(base_url=url, timeout=60) as client:
            for _ in range(3):  # warm-up: group joins, first SSE subscription
                one_job(client)
            jobs = []
            for _ in range(args.runs):
                time.sleep(args.gap)
                jobs.append(one_job(client))
        found = asyncio.run(records(bootstrap_of([stack.pid, *children(stack.pid)])))
        rows = [hops_ms(job, found) for job in jobs]
        print(f"ms from POST /generate, {args.runs} idle jobs {args.gap} s apart (load {os.getloadavg()[0]:.2f})")
        for row in rows:
            print("  " + "  ".join(f"{name} {value:6.1f}" for name, value in row.items()))
        print("median  " + "  ".join(f"{name} {statistics.median(r[name] for r in rows):6.1f}" for name in rows[0]))


if __name__ == "__main__":
    main()
