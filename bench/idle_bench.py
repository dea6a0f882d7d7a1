"""Idle benchmark: CPU of an idle `acefarm dev` stack per process, and idle submit -> success latency.

Starts `acefarm dev` exactly as a developer does (its own embedded broker, `ENGINE=null`), waits until it
is ready and has run a few warm-up jobs, then prints:
  * CPU per process (the supervisor, the broker and its wake-up proxy, and each service) over `--seconds`
    with no jobs, as % of one core, from /proc/<pid>/stat;
  * idle end-to-end latency: one job at a time, each after `--gap` seconds of quiet, POST /generate ->
    `success` over SSE, p50/max;
  * the floor for that latency: the same number of sequential produce -> consume hops (4: request, admitted
    request, lifecycle event, status snapshot) between plain aiokafka clients on the same broker, same settings,
    measured in the same run, also after the same quiet gap.
The load average is printed before and after: other work on the machine shows up in every figure.

Usage: uv run python bench/idle_bench.py [--seconds 30] [--runs 20] [--gap 1.5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from pipeline_bench import own_dev_stack

from acefarm.infra.settings import Settings

BODY = {"prompt": "idle", "duration": 1.0}
HOPS = 4  # gateway -> scheduler (request), scheduler -> consumer (ready), consumer -> streams (event),
# streams -> gateway (snapshot)
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def children(pid: int) -> list[int]:
    """Direct child processes of `pid`."""
    found: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        found += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    return found


def name_of(pid: int) -> str:
    """A short name for a stack process from its command line."""
    argv = Path(f"/proc/{pid}/cmdline").read_text().split("\0")
    if argv[0].endswith("tansu"):
        return "broker (tansu)"
    if "-m" in argv:
        module, rest = argv[argv.index("-m") + 1], [a for a in argv[argv.index("-m") + 2 :] if a]
        if module == "acefarm":  # `acefarm dev` is the supervisor; each service runs as `acefarm <service>`
            return "acefarm dev (supervisor)" if rest[:1] == ["dev"] else " ".join(rest[:1])
        return {"acefarm.devtools.wakeup_proxy": "broker wake-up proxy"}.get(module, module)
    return " ".join(argv)[:40]


def bootstrap_of(pids: list[int]) -> str:
    """The clients' bootstrap address: the address the broker advertises (its wake-up proxy)."""
    for pid in pids:
        argv = Path(f"/proc/{pid}/cmdline").read_text().split("\0")
        if argv[0].endswith("tansu"):
            return argv[argv.index("--advertised-listener-url") + 1].removeprefix("tcp://")
    raise RuntimeError("no embedded broker among the stack's processes")


def load() -> str:
    """The 1-minute load average and the core count."""
    return f"load {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"


def submit_to_success(client: httpx.Client) -> float:
    """Seconds from POST /generate to the `success` event over SSE."""
    start = time.perf_counter()
    task_id = client.post("/generate", json=BODY).json()["task_id"]
    with client.stream("GET", f"/tasks/{task_id}/events") as stream:
        for line in stream.iter_lines():
            if line.startswith("event:") and line.split(":", 1)[1].strip() == "success":
                return time.perf_counter() - start
    raise RuntimeError(f"{task_id}: stream ended without success")


async def hop_floor(bootstrap: str, settings: Settings, runs: int, gap_s: float) -> list[float]:
    """Seconds for a record to pass `HOPS` produce -> consume hops, each consumer already long-polling."""
    names = [f"bench-hop-{uuid.uuid4().hex[:8]}-{i}" for i in range(HOPS)]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(name, 1, 1) for name in names])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    consumers = [
        AIOKafkaConsumer(name, bootstrap_servers=bootstrap, fetch_max_wait_ms=settings.fetch_max_wait_ms)
        for name in names
    ]
    for client in (producer, *consumers):
        await client.start()
    for consumer in consumers:
        await consumer.getmany(timeout_ms=500)  # position at the end

    async def relay(i: int) -> None:
        while True:
            for records in (await consumers[i].getmany(timeout_ms=60_000)).values():
                for record in records:
                    await producer.send_and_wait(names[i + 1], record.value)

    relays = [asyncio.create_task(relay(i)) for i in range(HOPS - 1)]
    samples = []
    try:
        for _ in range(runs):
            await asyncio.sleep(gap_s)
            start = time.perf_counter()
            await producer.send_and_wait(names[0], b"hop")
            while not any((await consumers[-1].getmany(timeout_ms=60_000)).values()):
                pass
            samples.append(time.perf_counter() - start)
    finally:
        for task in relays:
            task.cancel()
        await asyncio.gather(*relays, return_exceptions=True)
        for client in (producer, *consumers):
            await client.stop()
    return samples


def ms(samples: list[float]) -> str:
    """p50 and max of `samples` (seconds) in milliseconds."""
    return f"p50 {statistics.median(samples) * 1000:.1f} ms, max {max(samples) * 1000:.1f} ms"


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--gap", type=float, default=1.5, help="quiet seconds before each latency sample")
    args = parser.parse_args()
    with own_dev_stack("acefarm-idle-") as (stack, url):
        with httpx.Client(base_url=url, timeout=60) as client:
            for _ in range(3):  # warm-up: group joins, first SSE subscription
                submit_to_success(client)
            time.sleep(5)
            pids = [stack.pid, *children(stack.pid)]
            print(f"idle CPU over {args.seconds:.0f} s, no jobs ({load()} before)")
            before = {pid: cpu_seconds(pid) for pid in pids}
            started = time.monotonic()
            time.sleep(args.seconds)
            elapsed = time.monotonic() - started
            total = 0.0
            for pid in pids:
                share = (cpu_seconds(pid) - before[pid]) / elapsed * 100
                total += share
                print(f"  {name_of(pid):28s} {share:6.2f} % of a core")
            print(f"  {'total':28s} {total:6.2f} % of a core ({load()} after)")
            latencies = []
            for _ in range(args.runs):
                time.sleep(args.gap)
                latencies.append(submit_to_success(client))
        settings = Settings(kafka_broker_kind="embedded")
        floor = asyncio.run(hop_floor(bootstrap_of(pids), settings, args.runs, args.gap))
        ratio = statistics.median(latencies) / statistics.median(floor)
        print(f"idle submit -> success over SSE, {args.runs} runs, {args.gap} s apart: {ms(latencies)}")
        print(f"floor, {HOPS} sequential produce -> consume hops, same broker: {ms(floor)}  (ratio {ratio:.2f}x)")
        print(f"({load()} at the end)")


if __name__ == "__main__":
    main()
