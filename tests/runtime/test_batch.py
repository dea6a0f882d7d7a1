"""A batch of jobs (`JobRunner.handle_group`): each member keeps its own lifecycle around one shared engine call
(`JobContext.compute_shared`); a failing shared call is retried member by member."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from acefarm.infra.settings import Settings
from acefarm.runtime.cancels import CancelWatcher
from acefarm.runtime.lifecycle import Failed, FinalEvent, JobContext, JobRunner
from schemas import topics
from schemas.events import GenerationRequested
from tests.runtime.conftest import Classified, RecordingProducer, ScriptedWorker, clients, record, request
from tests.support.ids import new_task_id


class Engine:
    """A blocking batch call that records each call's inputs and threads; an input 'bad' fails its call."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.threads: set[str] = set()

    def __call__(self, items: list[str]) -> list[str]:
        self.calls.append(list(items))
        self.threads.add(threading.current_thread().name)
        if "bad" in items:  # fails the whole call it is in
            raise Classified(Failed("engine_error", f"bad input among {len(items)}"))
        return [f"out-{item}" for item in items]


def runner_for(tmp_path: Path, engine: Engine, results: dict[str, str], before: Any = None) -> tuple[Any, Any]:
    async def script(req: GenerationRequested, ctx: JobContext) -> FinalEvent:
        if before is not None:
            await before(req, ctx)
        results[req.task_id] = await ctx.compute_shared(req.params.prompt, engine)
        return ctx.succeeded()

    config = Settings(_env_file=None, output_dir=tmp_path / "data")
    producer = RecordingProducer()
    worker = ScriptedWorker(script)
    worker.producer = producer
    worker_clients = clients(config, producer, tmp_path, CancelWatcher(config))
    runner: JobRunner[GenerationRequested] = JobRunner(worker, worker_clients)
    return runner, producer


def records(*prompts: str) -> tuple[list[str], list[Any]]:
    task_ids = [new_task_id() for _ in prompts]
    made = []
    for offset, (task_id, prompt) in enumerate(zip(task_ids, prompts, strict=True)):
        job = request(task_id)
        job = job.model_copy(update={"params": job.params.model_copy(update={"prompt": prompt})})
        made.append(record(job.to_bytes(), offset=offset))
    return task_ids, made


async def test_members_share_one_call_each_with_its_own_start_result_and_final_event(tmp_path: Path) -> None:
    engine, results = Engine(), {}
    runner, producer = runner_for(tmp_path, engine, results)
    task_ids, batch = records("x", "y", "z")
    ready = asyncio.Event()
    assert await runner.handle_group(batch, ready) is True
    assert ready.is_set()
    assert engine.calls == [["x", "y", "z"]] and len(engine.threads) == 1
    assert results == {task_ids[0]: "out-x", task_ids[1]: "out-y", task_ids[2]: "out-z"}
    for task_id in task_ids:
        events = [e for e in producer.events() if e.task_id == task_id]
        assert [e.type for e in events] == ["task.started", "task.succeeded"]
        assert events[0].attempt == events[1].attempt
    assert len({e.attempt for e in producer.events()}) == 3
    assert not runner.slot.locked(), "the engine goes to the next job"


async def test_a_failed_shared_call_is_retried_member_by_member(tmp_path: Path) -> None:
    engine, results = Engine(), {}
    runner, producer = runner_for(tmp_path, engine, results)
    task_ids, batch = records("a", "bad", "c")
    assert await runner.handle_group(batch) is True
    assert engine.calls == [["a", "bad", "c"], ["a"], ["bad"], ["c"]]
    finals = {e.task_id: e for e in producer.events() if e.type != "task.started"}
    assert finals[task_ids[0]].type == finals[task_ids[2]].type == "task.succeeded"
    assert (finals[task_ids[1]].type, finals[task_ids[1]].reason) == ("task.failed", "engine_error")


async def test_a_member_ending_before_its_engine_call_does_not_hold_the_others(tmp_path: Path) -> None:
    engine, results = Engine(), {}

    async def before(req: GenerationRequested, ctx: JobContext) -> None:
        if req.params.prompt == "quits":
            raise Classified(Failed("invalid_input", "gave up before the engine"))

    runner, producer = runner_for(tmp_path, engine, results, before)
    task_ids, batch = records("p", "quits", "q")
    assert await asyncio.wait_for(runner.handle_group(batch), 10) is True
    assert engine.calls == [["p", "q"]]
    finals = {e.task_id: e.type for e in producer.events() if e.type != "task.started"}
    assert finals == {task_ids[0]: "task.succeeded", task_ids[1]: "task.failed", task_ids[2]: "task.succeeded"}


async def test_a_record_parsed_for_its_batch_key_runs_as_parsed_and_an_invalid_one_is_dead_lettered(
    tmp_path: Path,
) -> None:
    engine, results = Engine(), {}
    runner, producer = runner_for(tmp_path, engine, results)
    (task_id,), (valid,) = records("a")
    wrong_key = record(request(new_task_id()).to_bytes(), offset=1, key=b"another-task")
    assert runner.batch_key(wrong_key) is None, "a record its job dead-letters is never batched"
    runner.batch_key(valid)
    assert await runner.handle(valid) is True and results == {task_id: "out-a"}
    assert await runner.handle(wrong_key) is True
    assert [event.type for sent_to, event in producer.sent if sent_to == topics.DEAD_LETTER] == ["deadletter"]
