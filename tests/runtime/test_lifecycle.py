"""The job lifecycle (`JobRunner`): events in order, exceptions mapped to final events, replay, abandon."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import structlog

from acefarm.infra.kafka import ensure_topics, make_producer
from acefarm.infra.settings import Settings
from acefarm.runtime.cancels import CancelWatcher
from acefarm.runtime.lifecycle import (
    ERROR_MAX_CHARS,
    Cancelled,
    Failed,
    FinalEvent,
    Interrupted,
    JobContext,
    JobRunner,
)
from acefarm.runtime.portal import PortalClosed
from acefarm.runtime.progress import Report
from schemas import topics
from schemas.events import CancelRequested, GenerationRequested, TaskSucceeded, TrainingRequested
from schemas.status import Stage
from schemas.training import TrainingOptions
from tests.runtime.conftest import Classified, RecordingProducer, ScriptedWorker, clients, record, request
from tests.support.ids import new_task_id


def make_runner(
    tmp_path: Path, worker: ScriptedWorker, cancels: CancelWatcher | None = None, **settings: Any
) -> tuple[JobRunner[GenerationRequested], RecordingProducer]:
    config = Settings(_env_file=None, output_dir=tmp_path / "data", **settings)
    producer = RecordingProducer()
    worker.producer = producer
    return JobRunner(worker, clients(config, producer, tmp_path, cancels or CancelWatcher(config))), producer


async def test_a_job_publishes_started_then_its_final_event_and_may_be_committed(tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    async def script(req: GenerationRequested, ctx: JobContext) -> FinalEvent:
        seen["thread_task_id"] = await ctx.in_thread(
            lambda: structlog.contextvars.get_contextvars().get("task_id"), name="test"
        )
        return ctx.succeeded()

    worker = ScriptedWorker(script)
    runner, producer = make_runner(tmp_path, worker)
    task_id = new_task_id()
    assert await runner.handle(record(request(task_id).to_bytes())) is True
    started, final = producer.events()
    assert (started.type, started.worker) == ("task.started", "test-worker")
    assert isinstance(final, TaskSucceeded) and final.attempt == started.attempt and final.task_id == task_id
    assert seen["thread_task_id"] == task_id, "task_id is bound to every log line, also in the worker thread"
    assert [f.type for f, _ in worker.finals] == ["task.succeeded"]


async def test_malformed_and_foreign_records_are_dead_lettered_and_committed(tmp_path: Path) -> None:
    worker = ScriptedWorker(lambda req, ctx: pytest.fail("a bad record must not run"))
    runner, producer = make_runner(tmp_path, worker)
    training = TrainingRequested(
        task_id=new_task_id(),
        lora_id="style-000000",
        style_name="s",
        dataset_key="datasets/x.zip",
        options=TrainingOptions(),
    )
    assert await runner.handle(record(b"{not json")) is True
    assert await runner.handle(record(training.to_bytes())) is True
    letters = producer.events(topics.DEAD_LETTER)
    assert len(letters) == 2 and producer.events() == []
    assert letters[0].error.startswith("invalid event") and "expected a generation.requested" in letters[1].error


def failing(error: Exception) -> Any:
    async def script(req: GenerationRequested, ctx: JobContext) -> FinalEvent:
        raise error

    return script


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (Classified(Failed("out_of_memory", "x" * 5000)), ("task.failed", "out_of_memory", "x" * ERROR_MAX_CHARS)),
        (Classified(Failed("invalid_input", "bad zip")), ("task.failed", "invalid_input", "bad zip")),
        (Classified(Cancelled()), ("task.cancelled", "cancelled while running", None)),
        (Classified(Cancelled("cancelled while training")), ("task.cancelled", "cancelled while training", None)),
        (RuntimeError("boom"), ("task.failed", "internal", "RuntimeError: boom")),
        (KeyError(), ("task.failed", "internal", "KeyError")),
        (Classified(Failed("made_up_reason", "what")), ("task.failed", "internal", "Classified: Failed(")),
    ],
)
async def test_exceptions_become_the_final_event(tmp_path: Path, error: Exception, expected: tuple[Any, ...]) -> None:
    worker = ScriptedWorker(failing(error))
    runner, producer = make_runner(tmp_path, worker)
    assert await runner.handle(record(request(new_task_id()).to_bytes())) is True
    started, final = producer.events()
    kind, reason, text = expected
    assert final.type == kind and final.reason == reason and final.attempt == started.attempt
    if text is not None:
        assert final.error.startswith(text) and len(final.error) <= ERROR_MAX_CHARS


async def test_an_interrupted_job_publishes_no_final_event_and_stays_uncommitted(tmp_path: Path) -> None:
    stop_seen = threading.Event()

    async def script(req: GenerationRequested, ctx: JobContext) -> FinalEvent:
        def train() -> None:
            while not ctx.stop_requested():  # a trainer checkpoints here, then stops early
                time.sleep(0.01)
            stop_seen.set()
            raise Classified(Interrupted())

        await ctx.in_thread(train, name="test")
        raise AssertionError("unreachable")

    worker = ScriptedWorker(script)
    runner, producer = make_runner(tmp_path, worker)
    job = asyncio.create_task(runner.handle(record(request(new_task_id()).to_bytes())))
    await asyncio.sleep(0.1)
    runner.on_shutdown()
    assert await asyncio.wait_for(job, 5) is False
    assert stop_seen.is_set() and producer.types() == ["task.started"] and worker.finals == []


async def test_progress_goes_out_throttled_before_the_final_event(tmp_path: Path) -> None:
    async def script(req: GenerationRequested, ctx: JobContext) -> FinalEvent:
        def work() -> None:
            for step in range(1, 31):
                ctx.report(Report(Stage.DIFFUSION, step / 30, step, 30))
                time.sleep(0.01)

        await ctx.in_thread(work, name="test")
        ctx.report_now(Report(Stage.UPLOADING, 1.0))  # superseded by the final event: never sent
        return ctx.succeeded()

    runner, producer = make_runner(tmp_path, ScriptedWorker(script), progress_max_hz=10)
    assert await runner.handle(record(request(new_task_id()).to_bytes())) is True
    types = producer.types()
    assert types[0] == "task.started" and types[-1] == "task.succeeded"
    progress = [e for e in producer.events() if e.type == "task.progress"]
    assert 1 <= len(progress) <= 4, "0.3 s of reports at 10 Hz, the first one interval after the start"
    assert all(e.stage == "diffusion" and e.attempt == producer.events()[0].attempt for e in progress)


async def test_a_stored_outcome_is_republished_instead_of_redoing_the_job(tmp_path: Path) -> None:
    task_id = new_task_id()
    stored = TaskSucceeded(task_id=task_id, attempt="earlier")
    worker = ScriptedWorker(lambda req, ctx: pytest.fail("a finished job must not run again"), stored=stored)
    runner, producer = make_runner(tmp_path, worker)
    assert await runner.handle(record(request(task_id).to_bytes())) is True
    assert producer.events() == [stored] and worker.runs == 0 and worker.finals == []


async def test_an_abandoned_job_stops_its_thread_and_publishes_nothing_more(tmp_path: Path) -> None:
    in_thread = threading.Event()
    outcome: dict[str, Any] = {}

    async def script(req: GenerationRequested, ctx: JobContext) -> FinalEvent:
        def work() -> None:
            in_thread.set()
            while not ctx.is_cancelled():
                time.sleep(0.01)
            outcome["cancelled"] = True
            try:
                ctx.blocking_storage.put_bytes("outputs/x/late.bin", b"late", "application/octet-stream")
            except PortalClosed:
                outcome["portal_closed"] = True

        await ctx.in_thread(work, name="test")
        return ctx.succeeded()

    worker = ScriptedWorker(script)
    runner, producer = make_runner(tmp_path, worker)
    job = asyncio.create_task(runner.handle(record(request(new_task_id()).to_bytes())))
    await asyncio.to_thread(in_thread.wait, 5)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    for _ in range(100):
        if "portal_closed" in outcome:
            break
        await asyncio.sleep(0.02)
    assert outcome == {"cancelled": True, "portal_closed": True}
    await asyncio.sleep(0.1)
    assert producer.types() == ["task.started"] and worker.finals == []
    assert not (tmp_path / "data" / "outputs" / "x" / "late.bin").exists()


async def test_a_job_cancelled_just_before_it_is_reached_is_skipped(
    make_settings: Any, tmp_path: Path, broker: object
) -> None:
    settings = make_settings()
    await ensure_topics(settings)
    cancels = CancelWatcher(settings)
    await cancels.start()
    producer = make_producer(settings)
    await producer.start()
    try:
        task_id = new_task_id()
        # Sent after the watcher started and straight before the job: only the catch-up can see it.
        await producer.send_and_wait(topics.TASK_CONTROL, CancelRequested(task_id=task_id).to_bytes())
        worker = ScriptedWorker(lambda req, ctx: pytest.fail("a cancelled job must not run"))
        runner, recorded = make_runner(tmp_path, worker, cancels)
        assert await runner.handle(record(request(task_id).to_bytes())) is True
    finally:
        await producer.stop()
        await cancels.stop()
    (skipped,) = recorded.events()
    assert skipped.type == "task.cancelled" and skipped.reason == "cancelled before it started"
    assert skipped.attempt is None and worker.runs == 0
    assert worker.finals == [(skipped, 0)], "on_final sees the final event before it is published"
