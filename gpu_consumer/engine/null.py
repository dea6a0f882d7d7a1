"""A null engine: instant, reports progress, returns a quiet tone; for orchestration benchmarks."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from gpu_consumer.engine.base import Job, JobCancelled, Take
from schemas.generation import TaskType
from schemas.status import Stage

SAMPLE_RATE = 48_000
AMPLITUDE = 0.05


class NullEngine:
    """Returns `batch_size` quiet 440 Hz stereo tones of the requested duration, without a model."""

    name = "null"
    sample_rate = SAMPLE_RATE
    supported_tasks = frozenset(TaskType)

    def __init__(self, settings: object | None = None) -> None:
        """Nothing to load; `settings` is accepted for the loader's factory signature."""
        self.jobs = 0
        self.calls = 0

    def generate(self, job: Job) -> list[Take]:
        """Report encoding, each step and decoding (honouring cancel), then return the tones."""
        return self.generate_batch([job])[0]

    def generate_batch(self, jobs: list[Job]) -> list[list[Take]]:
        """One step loop for all `jobs` (their step count is the first's): each live job gets its progress; a
        cancelled job drops out and gets no takes; `JobCancelled` once every job is cancelled."""
        self.calls += 1
        self.jobs += len(jobs)
        total = jobs[0].params.inference_steps
        for job in jobs:
            job.report(Stage.ENCODING, 0.0, None, None)
        live = list(jobs)
        for step in range(1, total + 1):
            live = [job for job in live if not job.is_cancelled()]
            if not live:
                raise JobCancelled
            self.on_step(live, step)
            for job in live:
                job.report(Stage.DIFFUSION, step / total, step, total)
        for job in live:
            job.report(Stage.DECODING, 1.0, None, None)
        return [[self.take(job, i) for i in range(job.params.batch_size)] if job in live else [] for job in jobs]

    def on_step(self, jobs: list[Job], step: int) -> None:
        """Called once per step for the live jobs, before it is reported; nothing here (subclasses may wait or
        fail)."""

    def take(self, job: Job, index: int) -> Take:
        """Take `index` of `job`: the quiet tone (one read-only array per duration, so it is encoded once:
        `gpu_consumer.audio_io.store_takes`)."""
        return Take(audio=_shared_tone(job.params.duration), sample_rate=SAMPLE_RATE)

    def info(self) -> dict[str, Any]:
        """What this engine is."""
        return {"engine": self.name, "sample_rate": self.sample_rate, "jobs": self.jobs, "calls": self.calls}


def quiet_tone(duration_s: float, freq: float = 440.0) -> np.ndarray:
    """A stereo float32 [2, S] sine at -26 dBFS lasting `duration_s` at 48 kHz."""
    t = np.arange(round(duration_s * SAMPLE_RATE), dtype=np.float32) / SAMPLE_RATE
    wave = (AMPLITUDE * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([wave, wave])


@functools.lru_cache(maxsize=8)
def _shared_tone(duration_s: float) -> np.ndarray:
    """`quiet_tone(duration_s)`, made once per duration and read-only."""
    tone = quiet_tone(duration_s)
    tone.flags.writeable = False
    return tone
