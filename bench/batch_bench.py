"""Generation throughput with batching (issue 14 item 7): jobs/s when compatible jobs share one pipeline call.

    uv run python bench/batch_bench.py [--batches 1 2 4 8] [--jobs 16] [--duration 10] [--steps 8] [--model DIR]
        [--device cpu]

For each batch size b, `--jobs` text2music jobs (each its own prompt and seed, one take) run on
`AceStepEngine.generate_batch` in calls of b jobs, as the GPU consumer runs a batch (`MAX_BATCH` = b).
One warm-up call per size; the figure is jobs / wall seconds of the calls, the median of `--rounds`.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from acefarm.infra.settings import Settings
from gpu_consumer.engine.acestep import AceStepEngine
from gpu_consumer.engine.base import Job
from schemas.generation import GenerationParams


def _jobs(count: int, duration: float, steps: int, start: int) -> list[Job]:
    return [
        Job(
            task_id=f"bench-{start + n}",
            params=GenerationParams(
                prompt=f"bench {start + n:04d}: upbeat synth pop", duration=duration, inference_steps=steps, seed=n
            ),
        )
        for n in range(count)
    ]


def _rate(engine: AceStepEngine, batch: int, jobs: int, duration: float, steps: int) -> float:
    pending = _jobs(jobs, duration, steps, 0)
    started = time.perf_counter()
    for first in range(0, jobs, batch):
        engine.generate_batch(pending[first : first + batch])
    return jobs / (time.perf_counter() - started)


def main() -> None:
    """Build (or use) a tiny checkpoint and print jobs/s per batch size."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", type=Path, help="Checkpoint dir (default: a fresh tiny one).")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: the settings' choice)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from acefarm.model.tiny import make_tiny

            model = make_tiny(Path(tmp) / "tiny")
        engine = AceStepEngine(Settings(model_path=model), device=args.device)
        info = engine.pipeline_info
        print(f"model={model} device={info.device} dtype={info.dtype}")
        print(f"{args.jobs} jobs x {args.duration:g} s audio, {args.steps} steps, median of {args.rounds} rounds")
        print(f"{'batch':>6}{'jobs/s':>10}{'x batch 1':>11}")
        base = None
        for batch in args.batches:
            engine.generate_batch(_jobs(batch, args.duration, args.steps, 10_000))  # warm-up at this shape
            rate = statistics.median(
                _rate(engine, batch, args.jobs, args.duration, args.steps) for _ in range(args.rounds)
            )
            base = base or rate
            print(f"{batch:>6}{rate:>10.2f}{rate / base:>10.2f}x", flush=True)


if __name__ == "__main__":
    main()
