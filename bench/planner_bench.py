"""What the planning stage adds per job: the extra queue hop and the 5 Hz LM's time, next to the DiT's.

Tiny random models on this machine's CPU (the LM's tokens/s on CPU is the figure that carries; the
tiny LM's absolute times do not predict the real 1.7B model's). The queue hop is one extra produce →
consume through the embedded Tansu broker (the forward from the planner to the DiT's topic).

    uv run --frozen python bench/planner_bench.py [--durations 10 30] [--runs 3] [--hops 50]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from acefarm.devtools.broker import EmbeddedBroker
from acefarm.infra.settings import Settings
from acefarm.model.lm.decode import Hooks, Sampling
from acefarm.model.lm.loading import load_lm
from acefarm.model.lm.tiny import make_tiny_lm
from acefarm.model.tiny import make_tiny
from gpu_consumer.engine.acestep import AceStepEngine
from gpu_consumer.engine.base import Job
from planner.plans import plan_input
from schemas.generation import GenerationParams


async def queue_hop_ms(bootstrap: str, hops: int) -> list[float]:
    """Milliseconds from send to receipt of one small record, `hops` times (one consumer, waiting)."""
    topic = f"bench-hop-{uuid.uuid4().hex[:6]}"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=20)
    await producer.start()
    await producer.send_and_wait(topic, b"warm-up")
    await consumer.start()
    await consumer.getone()
    times: list[float] = []
    try:
        for _ in range(hops):
            started = time.perf_counter()
            await producer.send_and_wait(topic, b"x" * 2048)  # about a forwarded request with 30 s of codes
            await consumer.getone()
            times.append((time.perf_counter() - started) * 1000)
    finally:
        await consumer.stop()
        await producer.stop()
    return times


def main() -> None:
    """Print the figures as a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--durations", type=float, nargs="+", default=[10.0, 30.0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--hops", type=int, default=50)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="planner-bench-"))
    dit_dir, lm_dir = make_tiny(work / "dit"), make_tiny_lm(work / "lm")
    settings = Settings(model_path=dit_dir, lm_model_path=lm_dir, device="cpu")
    lm, info = load_lm(settings)
    engine = AceStepEngine(settings, device="cpu")
    with EmbeddedBroker() as broker:
        hops = asyncio.run(queue_hop_ms(broker.bootstrap_servers, args.hops))
    print(
        f"queue hop (produce acks=all → consume, Tansu): p50 {statistics.median(hops):.1f} ms, "
        f"max {max(hops):.1f} ms over {len(hops)}"
    )
    print(f"LM: {info.source} on {info.device} ({info.dtype}), loaded in {info.load_s} s\n")
    print("| duration | LM think s | LM codes s | LM tokens/s | planning total s | DiT s (tiny, 8 steps) |")
    print("|---|---|---|---|---|---|")
    for duration in args.durations:
        think, codes, rates, dit = [], [], [], []
        for run in range(args.runs):
            params = GenerationParams(prompt="bench", duration=duration, thinking=True, seed=run)
            outcome = lm.plan(plan_input(params), Sampling(seed=run), Hooks())
            think.append(outcome.seconds.get("think", 0.0))
            codes.append(outcome.seconds.get("codes", 0.0))
            rates.append(outcome.tokens_per_second or 0.0)
            planned = params.model_copy(update={"audio_codes": outcome.codes})
            started = time.perf_counter()
            engine.generate(Job(task_id="bench", params=planned))
            dit.append(time.perf_counter() - started)
        total = statistics.median(think) + statistics.median(codes) + statistics.median(hops) / 1000
        print(
            f"| {duration:g} s | {statistics.median(think):.2f} | {statistics.median(codes):.2f} | "
            f"{statistics.median(rates):.0f} | {total:.2f} | {statistics.median(dit):.2f} |"
        )


if __name__ == "__main__":
    main()
