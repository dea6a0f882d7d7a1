"""Engine time per job on the tiny checkpoint, split into encode / diffusion / decode / encode-to-file / upload.

    uv run python bench/engine_bench.py [--duration 10] [--steps 8] [--jobs 5] [--format wav] [--model DIR]

Stages are timed from the engine's own progress reports: encode = job start → first diffusion step
begins (text + condition encoding, source/reference VAE encoding), diffusion = the steps, decode =
last step → takes returned (VAE decode). Then each take is encoded to the file format and written
to LocalStorage in a temporary directory. The tiny model's numbers measure the pipeline's fixed
costs and the orchestration around it, not real-model speed.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from acefarm.infra.audio import encode_audio
from acefarm.infra.settings import Settings
from acefarm.infra.storage.local import LocalStorage
from gpu_consumer.engine.acestep import AceStepEngine
from gpu_consumer.engine.base import Job
from schemas.generation import CONTENT_TYPES, AudioFormat, GenerationParams
from schemas.status import Stage


def _one_job(engine: AceStepEngine, storage: LocalStorage, params: GenerationParams, n: int) -> dict[str, float]:
    marks: dict[str, float] = {}

    def report(stage: Stage, progress: float, step: int | None, total: int | None) -> None:
        now = time.perf_counter()
        if stage is Stage.DIFFUSION and "first_step" not in marks:
            marks["first_step"] = now
        if stage is Stage.DECODING:
            marks["last_step"] = now

    started = time.perf_counter()
    takes = engine.generate(Job(task_id=f"bench-{n}", params=params, report=report))
    done = time.perf_counter()
    # The first diffusion report arrives after step 1: attribute one step's share back to diffusion.
    steps = params.inference_steps
    step_time = (marks["last_step"] - marks["first_step"]) / max(steps - 1, 1)
    encoded = [encode_audio(t.audio, t.sample_rate, params.audio_format) for t in takes]
    encoded_at = time.perf_counter()
    for i, data in enumerate(encoded):
        key = f"outputs/bench-{n}/take-{i}.{params.audio_format.value}"
        asyncio.run(storage.put_bytes(key, data, CONTENT_TYPES[params.audio_format]))
    uploaded_at = time.perf_counter()
    return {
        "encode": marks["first_step"] - step_time - started,
        "diffusion": marks["last_step"] - marks["first_step"] + step_time,
        "decode": done - marks["last_step"],
        "encode_to_file": encoded_at - done,
        "upload": uploaded_at - encoded_at,
        "total": uploaded_at - started,
    }


def main() -> None:
    """Build (or use) a tiny checkpoint, run the jobs, print median / min seconds per stage."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--format", default="wav", choices=[f.value for f in AudioFormat])
    parser.add_argument("--model", type=Path, help="Checkpoint dir (default: a fresh tiny one).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from acefarm.model.tiny import make_tiny

            model = make_tiny(Path(tmp) / "tiny")
        load_started = time.perf_counter()
        engine = AceStepEngine(Settings(model_path=model))
        info = engine.pipeline_info
        print(f"model={model} device={info.device} dtype={info.dtype} load={time.perf_counter() - load_started:.2f}s")
        storage = LocalStorage(Path(tmp) / "store")
        params = GenerationParams(
            prompt="bench: upbeat synth pop",
            duration=args.duration,
            inference_steps=args.steps,
            seed=1,
            batch_size=args.batch,
            audio_format=AudioFormat(args.format),
        )
        _one_job(engine, storage, params, -1)  # warm-up
        runs = [_one_job(engine, storage, params, n) for n in range(args.jobs)]
    print(f"{args.jobs} jobs, {args.duration:g} s audio, {args.steps} steps, batch {args.batch}, {args.format}")
    print(f"{'stage':<16}{'median s':>10}{'min s':>10}")
    for stage in runs[0]:
        values = [run[stage] for run in runs]
        print(f"{stage:<16}{statistics.median(values):>10.4f}{min(values):>10.4f}")


if __name__ == "__main__":
    main()
