"""The batch call an engine offers the worker (`batch_call`): its own `generate_batch`, or one job after another."""

from __future__ import annotations

from typing import Any

import pytest

from gpu_consumer.engine.base import Job, JobCancelled, Take, batch_call
from gpu_consumer.engine.null import NullEngine, quiet_tone
from schemas.generation import TaskType
from tests.engine.conftest import build_job


class OneAtATime:
    """An engine with `generate` only (as a plugin engine may be)."""

    name = "one-at-a-time"
    sample_rate = 48_000
    supported_tasks = frozenset(TaskType)

    def __init__(self) -> None:
        self.calls: list[str] = []

    def generate(self, job: Job) -> list[Take]:
        self.calls.append(job.params.prompt)
        if job.is_cancelled():
            raise JobCancelled
        return [Take(quiet_tone(job.params.duration), self.sample_rate)]

    def info(self) -> dict[str, Any]:
        return {"engine": self.name}


def test_an_engine_without_generate_batch_runs_the_jobs_one_after_another() -> None:
    engine = OneAtATime()
    call = batch_call(engine)
    results = call([build_job(prompt="a"), build_job(prompt="b", cancelled=lambda: True), build_job(prompt="c")])
    assert engine.calls == ["a", "b", "c"]
    assert [len(takes) for takes in results] == [1, 0, 1], "a cancelled job gets no takes"
    with pytest.raises(JobCancelled):
        call([build_job(cancelled=lambda: True)])


def test_the_null_engine_runs_a_batch_as_one_call() -> None:
    engine = NullEngine()
    results = batch_call(engine)([build_job(batch_size=2), build_job(duration=2.0)])
    assert engine.calls == 1 and engine.jobs == 2
    assert [[take.audio.shape[1] for take in takes] for takes in results] == [[57_600, 57_600], [96_000]]
