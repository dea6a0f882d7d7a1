"""The streams worker as a process on the embedded broker: fold, dead letters, restart."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from acefarm.infra.kafka import ensure_topics, make_consumer, make_producer, publish
from acefarm.infra.settings import Settings
from schemas import topics
from schemas.events import (
    CancelRequested,
    DeadLetter,
    Envelope,
    GenerationRequested,
    TaskProgress,
    TaskStarted,
    TaskStatusRecord,
    TaskSucceeded,
    parse_event,
)
from schemas.generation import GenerationParams
from schemas.status import Stage, StoredFile, TaskStatus

WAIT_S = 60.0


@pytest.fixture
def start_streams(kafka_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start `python -m acefarm streams` processes; every one is killed at the end."""
    procs: list[subprocess.Popen[bytes]] = []
    env = {**os.environ, **kafka_env, "OUTPUT_DIR": str(tmp_path / "data"), "LOG_FORMAT": "json"}

    def start(**extra_env: str) -> subprocess.Popen[bytes]:
        log = open(tmp_path / f"streams-{len(procs)}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            [sys.executable, "-m", "acefarm", "streams"], env={**env, **extra_env}, stdout=log, stderr=subprocess.STDOUT
        )
        procs.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
            if proc.stdout:
                proc.stdout.close()


@pytest.fixture
async def clients(make_settings: Callable[..., Settings]) -> AsyncIterator[tuple[AIOKafkaProducer, AIOKafkaConsumer]]:
    settings = make_settings()
    await ensure_topics(settings)
    producer = make_producer(settings)
    consumer = make_consumer(settings, topics.TASK_STATUS, topics.DEAD_LETTER, group_id=None)
    await producer.start()
    await consumer.start()
    try:
        yield producer, consumer
    finally:
        await consumer.stop()
        await producer.stop()


class Watcher:
    """Collects TASK_STATUS and DEAD_LETTER records about the tasks under test."""

    def __init__(self, consumer: AIOKafkaConsumer, task_ids: set[str]) -> None:
        self.consumer = consumer
        self.task_ids = task_ids
        self.statuses: dict[str, list[TaskStatus]] = {t: [] for t in task_ids}
        self.dead: list[DeadLetter] = []

    async def poll(self, timeout_ms: int = 200) -> None:
        batches = await self.consumer.getmany(timeout_ms=timeout_ms)
        for records in batches.values():
            for record in records:
                if record.value is None:  # a tombstone (test_expired_statuses_are_tombstoned_and_trimmed)
                    continue
                event = parse_event(record.value)
                if event.task_id not in self.task_ids:
                    continue
                if isinstance(event, TaskStatusRecord):
                    assert record.key == event.task_id.encode()
                    self.statuses[event.task_id].append(event.status)
                elif isinstance(event, DeadLetter):
                    self.dead.append(event)

    async def until(self, done: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + WAIT_S
        while not done():
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {self.statuses} {self.dead}"
            await self.poll()

    async def status(self, task_id: str, version: int) -> TaskStatus:
        await self.until(lambda: len(self.statuses[task_id]) >= version, f"{task_id} v{version}")
        return self.statuses[task_id][version - 1]

    async def dead_letters(self, count: int) -> None:
        await self.until(lambda: len(self.dead) >= count, f"{count} dead letters")

    def trail(self, task_id: str) -> list[tuple[str, int]]:
        return [(s.status.value, s.version) for s in self.statuses[task_id]]


async def send(producer: AIOKafkaProducer, event: Envelope) -> None:
    topic = topics.GENERATION_REQUESTS if isinstance(event, GenerationRequested) else topics.TASK_EVENTS
    await publish(producer, topic, event)


async def test_fold_dead_letter_and_restart(
    start_streams: Callable[..., subprocess.Popen[bytes]],
    clients: tuple[AIOKafkaProducer, AIOKafkaConsumer],
) -> None:
    producer, consumer = clients
    a, b = f"a-{uuid.uuid4().hex[:10]}", f"b-{uuid.uuid4().hex[:10]}"
    watch = Watcher(consumer, {a, b})
    params = GenerationParams(prompt="calm piano", duration=5)
    out = StoredFile(key=f"outputs/{a}/take-0.wav", content_type="audio/wav", size_bytes=10)

    def malformed(task_id: str) -> Any:
        return producer.send_and_wait(topics.TASK_EVENTS, b'{"type": "task.started", "oops": 1}', key=task_id.encode())

    started_at = time.monotonic()
    # faust's own setting, from the environment: the first worker never commits its offsets, so the
    # restarted one re-reads every record and must skip those already folded.
    first = start_streams(BROKER_COMMIT_INTERVAL="3600")
    await send(producer, GenerationRequested(task_id=a, params=params))
    assert (await watch.status(a, 1)).status == "pending"
    ready_s = time.monotonic() - started_at

    await send(producer, TaskStarted(task_id=a, attempt="a1", worker="gpu-0"))
    assert (await watch.status(a, 2)).attempt == "a1"
    await send(producer, TaskProgress(task_id=a, attempt="a1", stage=Stage.DIFFUSION, progress=0.5))
    assert (await watch.status(a, 3)).progress == 0.5
    await send(producer, TaskSucceeded(task_id=a, attempt="a1", files=[out]))
    done = await watch.status(a, 4)
    assert (done.status, done.files, done.progress) == ("success", [out], 1.0)

    # A redelivered job that starts and succeeds again, then a malformed record on the same partition:
    # once its dead letter is out, the duplicates before it have been folded (into nothing).
    await send(producer, TaskStarted(task_id=a, attempt="a2", worker="gpu-1"))
    await send(producer, TaskSucceeded(task_id=a, attempt="a2", files=[out]))
    await malformed(a)
    await watch.dead_letters(1)
    dead = watch.dead[0]
    assert (dead.task_id, dead.source_topic, dead.key, dead.consumer) == (a, topics.TASK_EVENTS, a, "acefarm-streams")
    assert '"oops"' in dead.value and "attempt" in dead.error

    await send(producer, GenerationRequested(task_id=b, params=params))
    assert (await watch.status(b, 1)).status == "pending"  # topics are not ordered relative to each other
    await send(producer, TaskStarted(task_id=b, attempt="b1", worker="gpu-0"))
    assert (await watch.status(b, 2)).status == "running"

    # Crash: the new worker rebuilds the table from the changelog and re-reads uncommitted records.
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    restarted_at = time.monotonic()
    start_streams()
    await send(producer, TaskProgress(task_id=b, attempt="b1", stage=Stage.DECODING, progress=0.9))
    # The kill may land after b's "running" snapshot went out but before its row reached the table's
    # changelog: then the restarted worker folds `TaskStarted` again and republishes "running" (the design:
    # a change whose row was lost is folded and published again). Either way the next change is the progress.
    await watch.until(lambda: any(s.progress == 0.9 for s in watch.statuses[b]), "b's progress after the restart")
    restart_s = time.monotonic() - restarted_at
    *refolded, resumed = watch.statuses[b][2:]
    assert all((s.status, s.attempt, s.progress) == ("running", "b1", 0.0) for s in refolded), watch.trail(b)
    assert len(refolded) <= 1, watch.trail(b)
    assert (resumed.status, resumed.progress, resumed.stage, resumed.attempt) == ("running", 0.9, "decoding", "b1")
    await send(producer, TaskSucceeded(task_id=b, attempt="b1"))
    assert (await watch.status(b, resumed.version + 1)).status == "success"

    await send(producer, TaskSucceeded(task_id=a, attempt="a3"))  # after the restart: still sticky
    await malformed(a)
    await watch.dead_letters(2)
    await asyncio.gather(watch.poll(500), asyncio.sleep(0.5))

    assert watch.trail(a) == [("pending", 1), ("running", 2), ("running", 3), ("success", 4)]
    assert watch.trail(b) == [("pending", 1), ("running", 2), ("running", 3), ("success", 4)]
    print(f"\nstreams: first status {ready_s:.1f}s after start; after a kill, {restart_s:.1f}s to resume")


async def test_expired_statuses_are_tombstoned_and_trimmed(
    start_streams: Callable[..., subprocess.Popen[bytes]],
    clients: tuple[AIOKafkaProducer, AIOKafkaConsumer],
) -> None:
    """A task final for longer than STATUS_RETENTION_DAYS gets a tombstone on the status topic and its row is
    deleted (a restarted worker does not bring it back); a task still running is kept."""
    producer, consumer = clients
    done, running = f"d-{uuid.uuid4().hex[:10]}", f"r-{uuid.uuid4().hex[:10]}"
    watch = Watcher(consumer, {done, running})
    tombstones: list[bytes] = []
    # A lifetime of 3 s; offsets committed every 0.2 s (faust's setting), as they are long before a real
    # lifetime of days ends: a restarted worker does not re-read the expired task's records.
    lifetime = {
        "STATUS_RETENTION_DAYS": str(3 / 86400),
        "STATUS_TRIM_INTERVAL_S": "0.3",
        "BROKER_COMMIT_INTERVAL": "0.2",
    }
    first = start_streams(**lifetime)
    params = GenerationParams(prompt="calm piano", duration=5)
    for task_id in (done, running):
        await send(producer, GenerationRequested(task_id=task_id, params=params))
        await watch.status(task_id, 1)
        await send(producer, TaskStarted(task_id=task_id, attempt=f"{task_id}-1", worker="gpu-0"))
    succeeded = TaskSucceeded(task_id=done, attempt=f"{done}-1")
    await send(producer, succeeded)
    assert (await watch.status(done, 3)).status == "success"
    assert (await watch.status(running, 2)).status == "running"

    deadline = time.monotonic() + WAIT_S
    while done.encode() not in tombstones:
        assert time.monotonic() < deadline, "no tombstone for the expired task"
        for records in (await consumer.getmany(timeout_ms=200)).values():
            tombstones.extend(r.key for r in records if r.value is None and r.key is not None)
    assert time.time() >= succeeded.occurred_at.timestamp() + 3  # not before its lifetime
    assert running.encode() not in tombstones
    await asyncio.sleep(1.0)  # a few commit intervals

    # The row is gone for good: after a restart a cancel for the expired task is for an unknown task
    # (ignored), while the running task still folds from its recovered row.
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    start_streams(**lifetime)
    await publish(producer, topics.TASK_CONTROL, CancelRequested(task_id=done))
    await send(producer, TaskProgress(task_id=running, attempt=f"{running}-1", stage=Stage.DIFFUSION, progress=0.5))
    assert (await watch.status(running, 3)).progress == 0.5
    await asyncio.gather(watch.poll(500), asyncio.sleep(1.0))
    assert watch.trail(done) == [("pending", 1), ("running", 2), ("success", 3)]


async def test_requests_on_a_model_pools_topic_are_folded(
    start_streams: Callable[..., subprocess.Popen[bytes]],
    clients: tuple[AIOKafkaProducer, AIOKafkaConsumer],
    make_settings: Callable[..., Settings],
) -> None:
    producer, consumer = clients
    await ensure_topics(make_settings(model_pools="base"))
    task_id = f"p-{uuid.uuid4().hex[:10]}"
    watch = Watcher(consumer, {task_id})
    start_streams(MODEL_POOLS="base")
    request = GenerationRequested(task_id=task_id, params=GenerationParams(prompt="stems", duration=5, model="base"))
    await publish(producer, topics.generation_requests("base"), request)
    assert (await watch.status(task_id, 1)).status == "pending"
