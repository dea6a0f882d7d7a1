"""The runner's watchdog and refusals: a hung job fails `timeout` and wedges the runner, attempts are
recorded in storage before each start, a job that crashed its workers `MAX_ATTEMPTS` times fails
`poison`, a job never started within its queue lifetime fails `expired`."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from acefarm.infra.settings import Settings
from acefarm.infra.storage import LocalStorage
from acefarm.runtime.attempts import AttemptRecord, read_attempts, write_attempts
from acefarm.runtime.cancels import CancelWatcher
from acefarm.runtime.lifecycle import FinalEvent, Interrupted, JobContext, JobRunner
from schemas.events import GenerationRequested, utcnow
from schemas.generation import GenerationParams
from tests.runtime.conftest import Classified, RecordingProducer, ScriptedWorker, clients, record, request
from tests.support.ids import new_task_id


def make_runner(
    tmp_path: Path, worker: ScriptedWorker, **settings: Any
) -> tuple[JobRunner[GenerationRequested], RecordingProducer, LocalStorage]:
    config = Settings(_env_file=None, output_dir=tmp_path / "data", **settings)
    producer = RecordingProducer()
    worker.producer = producer
    worker_clients = clients(config, producer, tmp_path, CancelWatcher(config))
    assert isinstance(worker_clients.storage, LocalStorage)
    return JobRunner(worker, worker_clients), producer, worker_clients.storage


async def test_a_job_stuck_in_its_thread_fails_timeout_and_wedges_the_runner(tmp_path: Path) -> None:
    release = threading.Event()
    seen: dict[str, Any] = {}

    async def script(req: GenerationRequested, ctx: JobContext) -> FinalEvent:
        def stuck() -> None:  # a native call that ignores cancellation
            release.wait(30)
            seen["cancelled_when_released"] = ctx.is_cancelled()

        await ctx.in_thread(stuck, name="stuck")
        return ctx.succeeded()

    runner, producer, storage = make_runner(tmp_path, ScriptedWorker(script), job_deadline_base_s=0.3)
    task_id = new_task_id()
    started = time.monotonic()
    assert await runner.handle(record(request(task_id).to_bytes())) is True, "the timeout is final: commit"
    assert time.monotonic() - started < 5
    started_event, final = producer.events()
    assert (final.type, final.reason, final.attempt) == ("task.failed", "timeout", started_event.attempt)
    assert "deadline of 0.3 s" in final.error
    assert runner.wedged, "the process must exit: the thread is still stuck"
    release.set()
    await asyncio.sleep(0.1)
    assert seen == {"cancelled_when_released": True}
    (entry,) = (await read_attempts(storage, task_id, "generation")).attempts
    assert (entry.attempt, entry.ended) == (started_event.attempt, "timeout")


async def test_a_hung_awaited_storage_call_fails_timeout(tmp_path: Path) -> None:
    async def script(req: GenerationRequested, ctx: JobContext) -> FinalEvent:
        await asyncio.Event().wait()  # an upload that never returns
        return ctx.succeeded()

    runner, producer, _ = make_runner(tmp_path, ScriptedWorker(script), job_deadline_base_s=0.2)
    assert await runner.handle(record(request(new_task_id()).to_bytes())) is True
    assert [e.type for e in producer.events()] == ["task.started", "task.failed"]
    assert producer.events()[-1].reason == "timeout" and runner.wedged


async def test_a_job_within_its_deadline_is_untouched(tmp_path: Path) -> None:
    async def script(req: GenerationRequested, ctx: JobContext) -> FinalEvent:
        await asyncio.sleep(0.05)
        return ctx.succeeded()

    runner, producer, storage = make_runner(tmp_path, ScriptedWorker(script), job_deadline_base_s=5)
    task_id = new_task_id()
    assert await runner.handle(record(request(task_id).to_bytes())) is True
    started, final = producer.events()
    assert final.type == "task.succeeded" and not runner.wedged and started.attempt_number == 1
    (entry,) = (await read_attempts(storage, task_id, "generation")).attempts
    assert (entry.worker, entry.ended) == ("test-worker", "task.succeeded")


async def test_after_max_attempts_crashed_attempts_the_job_fails_poison_without_running(tmp_path: Path) -> None:
    worker = ScriptedWorker(lambda req, ctx: ctx_succeeded(ctx))
    runner, producer, storage = make_runner(tmp_path, worker, max_attempts=3)
    task_id = new_task_id()
    crashed = AttemptRecord().started("a1", "w").started("a2", "w")  # no ending: the worker died mid-job
    await write_attempts(storage, task_id, "generation", crashed.started("i1", "w").ended_as("i1", "interrupted"))
    assert await runner.handle(record(request(task_id).to_bytes())) is True
    started, final = producer.events()
    assert final.type == "task.succeeded" and started.attempt_number == 4, "an interrupted attempt does not count"

    poisoned = new_task_id()
    await write_attempts(storage, poisoned, "generation", crashed.started("a3", "w").ended_as("a3", "timeout"))
    assert await runner.handle(record(request(poisoned).to_bytes())) is True
    (refused,) = producer.events()[2:]
    assert (refused.type, refused.reason, refused.attempt) == ("task.failed", "poison", None)
    assert "3 attempts" in refused.error and worker.runs == 1
    assert len((await read_attempts(storage, poisoned, "generation")).attempts) == 3, "a refused job records no attempt"


async def ctx_succeeded(ctx: JobContext) -> FinalEvent:
    return ctx.succeeded()


async def test_a_job_never_started_within_its_queue_lifetime_fails_expired(tmp_path: Path) -> None:
    worker = ScriptedWorker(lambda req, ctx: ctx_succeeded(ctx))
    runner, producer, storage = make_runner(tmp_path, worker, job_queue_ttl_s=3600)
    params = GenerationParams(prompt="old", duration=1.0)
    old = GenerationRequested(task_id=new_task_id(), params=params, occurred_at=utcnow() - timedelta(hours=2))
    assert await runner.handle(record(old.to_bytes())) is True
    (expired,) = producer.events()
    assert (expired.type, expired.reason, expired.attempt) == ("task.failed", "expired", None)
    assert "queue lifetime of 3600 s" in expired.error and worker.runs == 0

    # Started in time, then redelivered after a crash: it is not expired, it runs.
    resumed = GenerationRequested(task_id=new_task_id(), params=params, occurred_at=utcnow() - timedelta(hours=2))
    await write_attempts(storage, resumed.task_id, "generation", AttemptRecord().started("a1", "w"))
    assert await runner.handle(record(resumed.to_bytes())) is True
    assert [e.type for e in producer.events()[1:]] == ["task.started", "task.succeeded"] and worker.runs == 1


async def test_an_interrupted_attempt_is_recorded_as_such(tmp_path: Path) -> None:
    async def script(req: GenerationRequested, ctx: JobContext) -> FinalEvent:
        raise Classified(Interrupted())

    runner, _, storage = make_runner(tmp_path, ScriptedWorker(script))
    task_id = new_task_id()
    assert await runner.handle(record(request(task_id).to_bytes())) is False
    record_ = await read_attempts(storage, task_id, "generation")
    assert [e.ended for e in record_.attempts] == ["interrupted"] and record_.failures == 0
