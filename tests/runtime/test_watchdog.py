"""Deadlines: the size-scaled deadline of each kind of job, and the watchdog that gives up on work past it."""

from __future__ import annotations

import asyncio
import time

import pytest

from acefarm.infra.settings import Settings
from acefarm.runtime.watchdog import UNWIND_S, DeadlinePassed, job_deadline_s, within_deadline
from gpu_consumer.engine.null import NullEngine
from gpu_consumer.worker import GenerationWorker
from schemas.events import GenerationRequested, TrainingRequested
from schemas.generation import GenerationParams
from schemas.results import ModelUsed
from schemas.training import TrainingOptions
from trainer.worker import TrainingWorker


def settings(**values: float) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


def test_the_deadline_is_the_base_plus_the_size_term() -> None:
    config = settings(job_deadline_base_s=100)
    assert job_deadline_s(config) == 100
    assert job_deadline_s(config, 30, 0.5) == 115
    assert job_deadline_s(config, -5, 2.0) == 100, "a negative size adds nothing"


def test_a_generation_deadline_scales_with_duration_takes_and_steps() -> None:
    config = settings(job_deadline_base_s=60, generation_deadline_per_unit_s=0.01)
    worker = GenerationWorker(NullEngine(), ModelUsed(name="default", engine="null", id="null"))
    small = GenerationRequested(task_id="a", params=GenerationParams(prompt="p", duration=10, inference_steps=8))
    big = GenerationRequested(
        task_id="b", params=GenerationParams(prompt="p", duration=120, inference_steps=50, batch_size=4)
    )
    assert worker.deadline_s(small, config) == pytest.approx(60 + 10 * 8 * 0.01)
    assert worker.deadline_s(big, config) == pytest.approx(60 + 120 * 50 * 4 * 0.01)


def test_a_training_deadline_scales_with_steps() -> None:
    config = settings(job_deadline_base_s=60, training_deadline_per_step_s=2)
    worker = TrainingWorker.__new__(TrainingWorker)  # the deadline needs neither the model nor the limits
    request = TrainingRequested(
        task_id="t", lora_id="l", style_name="s", dataset_key="datasets/x.zip", options=TrainingOptions(steps=500)
    )
    assert worker.deadline_s(request, config) == 60 + 500 * 2


async def test_work_within_its_deadline_returns_its_result() -> None:
    async def quick() -> str:
        await asyncio.sleep(0.01)
        return "done"

    assert await within_deadline(quick(), 5, name="quick") == "done"


async def test_work_past_its_deadline_is_cancelled_and_the_watchdog_fires() -> None:
    unwound = asyncio.Event()

    async def hung() -> None:
        try:
            await asyncio.Event().wait()  # an awaited call that never returns (a hung upload)
        finally:
            unwound.set()

    started = time.monotonic()
    with pytest.raises(DeadlinePassed):
        await within_deadline(hung(), 0.2, name="hung")
    assert unwound.is_set() and time.monotonic() - started < 0.2 + UNWIND_S


async def test_work_that_ignores_cancellation_is_left_behind() -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                continue  # swallows every cancel

    started = time.monotonic()
    with pytest.raises(DeadlinePassed):
        await within_deadline(stubborn(), 0.1, name="stubborn")
    assert time.monotonic() - started < 0.1 + UNWIND_S + 1.0
    (leftover,) = [t for t in asyncio.all_tasks() if t.get_name() == "stubborn"]
    assert not leftover.done(), "the watchdog does not wait for work that will not stop"
    release.set()
    await leftover


async def test_cancelling_the_caller_cancels_the_work() -> None:
    cancelled = asyncio.Event()

    async def long() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    caller = asyncio.create_task(within_deadline(long(), 60, name="long"))
    await asyncio.sleep(0.05)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert cancelled.is_set()
