"""The engine protocol the GPU consumer calls, and the errors an engine may raise."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from acefarm.runtime.portal import BlockingStorage
from schemas.generation import GenerationParams, TaskType
from schemas.status import Stage


class EngineError(Exception):
    """A job failed inside the engine; the message is shown to the user."""

    reason = "engine_error"


class OutOfMemory(EngineError):
    """The accelerator ran out of memory (its cache has been emptied)."""

    reason = "out_of_memory"


class UnsupportedTask(EngineError):
    """The loaded checkpoint cannot do what the job asks."""

    reason = "unsupported"


class InvalidInput(EngineError):
    """The job's inputs are unusable (bad audio, impossible window, ...)."""

    reason = "invalid_input"


class JobCancelled(Exception):
    """The job was cancelled while running; partial results are discarded."""


ProgressFn = Callable[[Stage, float, int | None, int | None], None]
"""report(stage, progress 0..1, step, total_steps); thread-safe, throttled by the caller."""


@dataclass
class Job:
    """One generation job as handed to an engine (runs in a worker thread)."""

    task_id: str
    params: GenerationParams
    src_audio: np.ndarray | None = None
    """float32 [2, samples] at the engine's sample rate, or None."""
    reference_audio: np.ndarray | None = None
    """float32 [2, samples] at the engine's sample rate, or None."""
    report: ProgressFn = field(default=lambda stage, progress, step, total: None)
    is_cancelled: Callable[[], bool] = field(default=lambda: False)
    storage: BlockingStorage | None = None
    """Storage from the engine's thread (LoRA adapters); None: no storage reachable."""


@dataclass
class Take:
    """One generated take: float32 audio [channels, samples] in [-1, 1]."""

    audio: np.ndarray
    sample_rate: int


class Engine(Protocol):
    """Turns jobs into takes. Loaded once per process; `generate` runs in a worker thread."""

    name: str
    sample_rate: int
    supported_tasks: frozenset[TaskType]

    def generate(self, job: Job) -> list[Take]:
        """Run one job (blocking): one take per `batch_size`; raise `EngineError`/`JobCancelled`."""
        ...

    def info(self) -> dict[str, Any]:
        """What is loaded where (model id, device, dtype, adapters)."""
        ...


@runtime_checkable
class BatchEngine(Engine, Protocol):
    """An engine that runs compatible jobs (same steps, LoRAs, task type and settings; no input audio) as one
    call; see docs/consumer.md, "Batching"."""

    def generate_batch(self, jobs: list[Job]) -> list[list[Take]]:
        """Run the jobs as one call (blocking): each job's takes, in order, each of its own duration. Progress
        goes to every job; a job cancelled meanwhile may get no takes (they are discarded); `JobCancelled` only
        once every job is cancelled; an error fails the whole call."""
        ...


def batch_call(engine: Engine) -> Callable[[list[Job]], list[list[Take]]]:
    """The engine's `generate_batch`, or `generate_each` for an engine without one."""
    if isinstance(engine, BatchEngine):
        return engine.generate_batch
    return functools.partial(generate_each, engine)


def generate_each(engine: Engine, jobs: list[Job]) -> list[list[Take]]:
    """`generate_batch` for an engine without a batched call: one `generate` after another (a job cancelled
    meanwhile gets no takes; `JobCancelled` once every job is cancelled)."""
    results: list[list[Take]] = []
    for job in jobs:
        try:
            results.append(engine.generate(job))
        except JobCancelled:
            results.append([])
    if all(job.is_cancelled() for job in jobs):
        raise JobCancelled
    return results
