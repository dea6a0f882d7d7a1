"""Batching in the consumer process (tone engine, real broker): compatible requests queued together share one
engine call with their own seeds, files, progress, cancellation and final event; incompatible ones run apart;
`MAX_BATCH=1` turns it off; a worker killed mid-batch leaves every member to be redone, each ending once."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tests.consumer.conftest import (
    FINAL_TYPES,
    Client,
    EventRecorder,
    consumer_env,
    start_consumer,
)
from tests.consumer.test_lifecycle import committed_offset
from tests.support.ids import new_task_id
from tests.support.processes import Service

pytestmark = pytest.mark.timeout(240)


async def busy_engine(client: Client, recorder: EventRecorder) -> list[str]:
    """Occupy the consumer so that what is submitted next queues up: a slow job computes and a second one,
    already taken, waits for the engine (the loop takes nothing more until it computes). Returns their ids."""
    computing, waiting = new_task_id(), new_task_id()
    await client.submit(computing, prompt="blocker step_s=0.4", inference_steps=10)
    await recorder.wait_for(lambda: "task.started" in recorder.types(computing), 30, "the slow job to start")
    await client.submit(waiting, prompt="next", inference_steps=3)
    await asyncio.sleep(1.0)  # taken at once: the loop was waiting for a record
    return [computing, waiting]


def engine_batches(service: Service) -> list[list[str]]:
    """The task ids of each batched engine call the consumer logged."""
    batches = []
    for line in service.log().splitlines():
        if '"engine.batch"' in line:
            batches.append(json.loads(line)["tasks"])
    return batches


async def finals(recorder: EventRecorder, task_ids: list[str], timeout_s: float = 60.0) -> dict[str, Any]:
    return {task_id: await recorder.final(task_id, timeout_s=timeout_s) for task_id in task_ids}


def terminal_count(recorder: EventRecorder, task_id: str) -> int:
    return sum(1 for kind in recorder.types(task_id) if kind in FINAL_TYPES)


async def test_compatible_requests_share_one_call_and_incompatible_ones_run_apart(
    topics_ready: None, kafka_env: dict[str, str], tmp_path: Path, client: Client, recorder: EventRecorder
) -> None:
    service = start_consumer("c-batch", consumer_env(kafka_env, tmp_path / "data"), tmp_path / "logs")
    busy = await busy_engine(client, recorder)
    together = [new_task_id() for _ in range(3)]
    durations = [1.0, 1.5, 2.0]  # one 10 s bucket: the call runs at 2 s, each take is cut to its own length
    for index, (task_id, duration) in enumerate(zip(together, durations, strict=True)):
        await client.submit(task_id, prompt=f"song {index}", seed=1000 * index, duration=duration, batch_size=2)
    other_steps, other_lora = new_task_id(), new_task_id()
    await client.submit(other_steps, inference_steps=4)
    await client.submit(other_lora, loras=[{"lora_id": "warm-pads", "scale": 0.5}])
    try:
        ended = await finals(recorder, [*busy, *together, other_steps, other_lora])
    finally:
        service.stop()
    assert all(final.type == "task.succeeded" for final in ended.values()), ended
    batches = engine_batches(service)
    assert [sorted(batch) for batch in batches] == [sorted(together)], batches
    for index, (task_id, duration) in enumerate(zip(together, durations, strict=True)):
        final = ended[task_id]
        assert [round(f.duration_s, 2) for f in final.files] == [duration, duration]
        assert final.used.seeds == [1000 * index, 1000 * index + 1]
        assert all(f.key.startswith(f"outputs/{task_id}/") for f in final.files)
        events = recorder.by_task[task_id]
        assert [e.type for e in events if e.type == "task.started"] == ["task.started"]
        assert final.attempt == next(e.attempt for e in events if e.type == "task.started")
        assert terminal_count(recorder, task_id) == 1
    assert len({f.key for task_id in together for f in ended[task_id].files}) == 6


async def test_max_batch_1_runs_one_call_per_job(
    topics_ready: None, kafka_env: dict[str, str], tmp_path: Path, client: Client, recorder: EventRecorder
) -> None:
    env = consumer_env(kafka_env, tmp_path / "data", MAX_BATCH="1")
    service = start_consumer("c-nobatch", env, tmp_path / "logs")
    busy = await busy_engine(client, recorder)
    task_ids = [new_task_id() for _ in range(3)]
    for task_id in task_ids:
        await client.submit(task_id)
    try:
        ended = await finals(recorder, [*busy, *task_ids])
    finally:
        service.stop()
    assert all(final.type == "task.succeeded" for final in ended.values()), ended
    assert engine_batches(service) == []


async def test_a_member_cancelled_mid_batch_ends_cancelled_and_the_others_succeed(
    topics_ready: None, kafka_env: dict[str, str], tmp_path: Path, client: Client, recorder: EventRecorder
) -> None:
    service = start_consumer("c-cancel", consumer_env(kafka_env, tmp_path / "data"), tmp_path / "logs")
    busy = await busy_engine(client, recorder)
    task_ids = [new_task_id() for _ in range(3)]
    for task_id in task_ids:
        await client.submit(task_id, prompt="slow step_s=0.15", inference_steps=30)
    try:
        victim = task_ids[1]
        await recorder.wait_for(lambda: "task.progress" in recorder.types(victim), 30, "the batch to make progress")
        await client.cancel(victim)
        ended = await finals(recorder, [*busy, *task_ids])
    finally:
        service.stop()
    assert [sorted(batch) for batch in engine_batches(service)] == [sorted(task_ids)]
    assert ended[victim].type == "task.cancelled" and ended[victim].attempt, ended[victim]
    for task_id in (task_ids[0], task_ids[2]):
        assert ended[task_id].type == "task.succeeded", ended[task_id]
        steps = [e.step for e in recorder.by_task[task_id] if e.type == "task.progress" and e.step]
        assert steps and max(steps) > 1
    assert all(terminal_count(recorder, task_id) == 1 for task_id in task_ids)


async def test_a_worker_killed_mid_batch_leaves_every_member_to_be_redone_once(
    topics_ready: None, kafka_env: dict[str, str], tmp_path: Path, client: Client, recorder: EventRecorder
) -> None:
    env = consumer_env(kafka_env, tmp_path / "data")
    logs = tmp_path / "logs"
    first = start_consumer("c-killed", env, logs)
    busy = await busy_engine(client, recorder)
    task_ids = [new_task_id() for _ in range(3)]
    metas = [await client.submit(task_id, prompt="redo step_s=0.2", inference_steps=30) for task_id in task_ids]
    try:
        await recorder.wait_for(
            lambda: all("task.progress" in recorder.types(task_id) for task_id in task_ids), 30, "the batch to run"
        )
        first.kill()
    finally:
        first.kill()
    assert [sorted(batch) for batch in engine_batches(first)] == [sorted(task_ids)]
    assert not any(terminal_count(recorder, task_id) for task_id in task_ids)
    second = start_consumer("c-redo", env, logs)
    try:
        ended = await finals(recorder, [*busy, *task_ids], timeout_s=90)
    finally:
        second.stop()
    bootstrap = kafka_env["KAFKA_BOOTSTRAP_SERVERS"]
    for task_id, meta in zip(task_ids, metas, strict=True):
        assert ended[task_id].type == "task.succeeded", recorder.by_task[task_id]
        started = [e for e in recorder.by_task[task_id] if e.type == "task.started"]
        assert [e.attempt_number for e in started] == [1, 2]
        assert ended[task_id].attempt == started[-1].attempt
        assert terminal_count(recorder, task_id) == 1
        assert (await committed_offset(bootstrap, meta.partition) or 0) > meta.offset
    assert engine_batches(second) == [], "a retried attempt runs alone"
