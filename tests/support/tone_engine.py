"""A deterministic test engine: a real sine tone of the requested length, no torch.

Environment knobs (read per job): `TONE_ENGINE_STEP_S` sleeps that long per fake diffusion step; a
token `step_s=<seconds>` in the prompt overrides it for one job (so one process serves fast and slow jobs).
Prompts containing 'explode' raise `EngineError`, 'oom' raises `OutOfMemory`, 'crash' raises a
plain `RuntimeError` (an unexpected bug), 'unsupported' raises `UnsupportedTask`.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any

import numpy as np

from gpu_consumer.engine.base import EngineError, Job, JobCancelled, OutOfMemory, Take, UnsupportedTask
from schemas.generation import TaskType
from schemas.status import Stage

SAMPLE_RATE = 48_000


class ToneEngine:
    """Writes `batch_size` stereo sine tones of `duration` seconds at 48 kHz."""

    name = "tone"
    sample_rate = SAMPLE_RATE
    supported_tasks = frozenset(TaskType)

    def __init__(self, settings: object | None = None) -> None:
        self.jobs = 0

    def generate(self, job: Job) -> list[Take]:
        """Fake diffusion steps (reporting progress, honouring cancel), then the tones."""
        self.jobs += 1
        prompt = job.params.prompt.lower()
        step_s = _step_seconds(prompt)
        total = job.params.inference_steps
        job.report(Stage.ENCODING, 0.0, None, None)
        for step in range(1, total + 1):
            if job.is_cancelled():
                raise JobCancelled
            if step_s:
                time.sleep(step_s)
            if step == 1:
                self._maybe_fail(prompt)
            job.report(Stage.DIFFUSION, step / total, step, total)
        job.report(Stage.DECODING, 1.0, None, None)
        return [self._tone(job, take) for take in range(job.params.batch_size)]

    def info(self) -> dict[str, Any]:
        """What this engine is."""
        return {"engine": self.name, "sample_rate": self.sample_rate, "jobs": self.jobs}

    @staticmethod
    def _maybe_fail(prompt: str) -> None:
        if "explode" in prompt:
            raise EngineError("the tone engine exploded on purpose (prompt contains 'explode')")
        if "oom" in prompt:
            raise OutOfMemory("CUDA out of memory: tried to allocate 20.00 GiB (test engine)")
        if "unsupported" in prompt:
            raise UnsupportedTask("this checkpoint cannot do that (test engine)")
        if "crash" in prompt:
            raise RuntimeError("unexpected bug in the test engine")

    def _tone(self, job: Job, take: int) -> Take:
        samples = round(job.params.duration * SAMPLE_RATE)
        seed = job.params.seed or 0
        freq = 220.0 + (seed % 440) + 110.0 * take
        t = np.arange(samples, dtype=np.float64) / SAMPLE_RATE
        wave = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
        return Take(audio=np.stack([wave, wave]), sample_rate=SAMPLE_RATE)


def _step_seconds(prompt: str) -> float:
    found = re.search(r"step_s=([0-9.]+)", prompt)
    if found:
        return float(found.group(1))
    return float(os.environ.get("TONE_ENGINE_STEP_S", "0") or 0)
