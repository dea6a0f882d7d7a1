"""Overlap at the runtime: a worker that prepares ahead lets the next job in as soon as one is prepared and waits
for the engine; any other worker only once the job computes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from acefarm.infra.settings import Settings
from acefarm.runtime.cancels import CancelWatcher
from acefarm.runtime.lifecycle import FinalEvent, JobContext, JobRunner
from schemas.events import GenerationRequested
from tests.runtime.conftest import RecordingProducer, ScriptedWorker, clients, record, request
from tests.support.ids import new_task_id


@pytest.mark.parametrize("ahead", [False, True])
async def test_the_next_job_signals_ready_while_waiting_for_the_engine_only_when_preparing_ahead(
    tmp_path: Path, ahead: bool
) -> None:
    computing, release = asyncio.Event(), asyncio.Event()

    async def script(req: GenerationRequested, ctx: JobContext) -> FinalEvent:
        async with ctx.compute():
            if not computing.is_set():
                computing.set()
                await release.wait()
        return ctx.succeeded()

    config = Settings(_env_file=None, output_dir=tmp_path / "data")
    producer = RecordingProducer()
    worker = ScriptedWorker(script)
    worker.prepares_ahead = ahead
    runner = JobRunner(worker, clients(config, producer, tmp_path, CancelWatcher(config)))
    first_ready, second_ready = asyncio.Event(), asyncio.Event()
    first = asyncio.create_task(runner.handle(record(request(new_task_id()).to_bytes()), first_ready))
    await asyncio.wait_for(computing.wait(), 10)
    second = asyncio.create_task(runner.handle(record(request(new_task_id()).to_bytes(), offset=1), second_ready))
    await asyncio.sleep(0.2)
    assert second_ready.is_set() is ahead, "prepared and waiting for the engine"
    assert worker.runs == 1 and producer.types() == ["task.started"], "nothing of the second job starts yet"
    release.set()
    assert await asyncio.wait_for(first, 10) and await asyncio.wait_for(second, 10)
    assert sorted(producer.types()) == ["task.started"] * 2 + ["task.succeeded"] * 2
