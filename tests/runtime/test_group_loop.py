"""The job loop (`consume_pipelined`) against the embedded broker: pause/resume around a long job,
commits (in order, with the next job prepared while one computes), and the grace period on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from acefarm.infra.kafka import client_options, make_producer
from acefarm.infra.settings import Settings
from acefarm.runtime.group_loop import KEEPALIVE_POLL_S, PausingListener, Shutdown, make_job_consumer
from acefarm.runtime.pipeline import Batching, JobSignal, PipelinedHandler, consume_pipelined

Handler = Callable[[ConsumerRecord[bytes, bytes]], Awaitable[bool]]


class Loop:
    """A job consumer on its own topic and group, running `consume_pipelined` in a task; a plain `Handler`
    is one that never lets the next record in before it is over."""

    def __init__(
        self,
        settings: Settings,
        topic: str,
        handle: Handler | PipelinedHandler,
        *,
        grace_s: float = 10.0,
        batching: Batching | None = None,
        group: str | None = None,
    ) -> None:
        self.topic = topic
        self.group = group or f"test-loop-{uuid.uuid4().hex[:8]}"
        self.consumer = make_job_consumer(settings, self.group)
        self.listener = PausingListener(self.consumer)
        self.consumer.subscribe([topic], listener=self.listener)
        self.shutdown = Shutdown()
        self.handle: PipelinedHandler = handle if _takes_ready(handle) else _whole(handle)  # type: ignore[arg-type]
        self.grace_s = grace_s
        self.batching = batching
        self.shutdown_calls = 0
        self.stop_requested = asyncio.Event()
        self.paused_seen: list[set[TopicPartition]] = []
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.consumer.start()
        self.task = asyncio.create_task(
            consume_pipelined(
                self.consumer,
                self.listener,
                self.handle,
                self.shutdown,
                grace_s=self.grace_s,
                on_shutdown=self._on_shutdown,
                batching=self.batching,
            )
        )

    def _on_shutdown(self) -> None:
        self.shutdown_calls += 1
        self.stop_requested.set()

    async def sample_paused(self, until: asyncio.Event) -> None:
        """Record the paused partitions every 50 ms until `until` is set."""
        while not until.is_set():
            self.paused_seen.append(set(self.consumer.paused()))
            await asyncio.sleep(0.05)

    async def committed(self, partition: int = 0) -> int | None:
        return await self.consumer.committed(TopicPartition(self.topic, partition))

    async def finished(self, timeout_s: float = 15.0) -> None:
        assert self.task is not None
        await asyncio.wait_for(self.task, timeout_s)

    async def close(self) -> None:
        if self.task is not None and not self.task.done():
            self.shutdown.request()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.task, 15)
        await self.consumer.stop()


def _takes_ready(handle: object) -> bool:
    return len(inspect.signature(handle).parameters) == 2  # type: ignore[arg-type]


def _whole(handle: Handler) -> PipelinedHandler:
    async def pipelined(record: ConsumerRecord[bytes, bytes], ready: asyncio.Event) -> bool:
        return await handle(record)

    return pipelined


@pytest.fixture
async def topic(make_settings: Any) -> AsyncIterator[tuple[Settings, str, AIOKafkaProducer]]:
    """A fresh two-partition topic, and a producer."""
    settings = make_settings()
    name = f"test.group-loop.{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 2, 1)])
    finally:
        await admin.close()
    producer = make_producer(settings)
    await producer.start()
    try:
        yield settings, name, producer
    finally:
        await producer.stop()


async def test_a_long_job_pauses_every_partition_and_resumes_after(topic: Any) -> None:
    settings, name, producer = topic
    done: list[bytes] = []
    all_done, sampling_done = asyncio.Event(), asyncio.Event()

    async def handle(record: ConsumerRecord[bytes, bytes]) -> bool:
        if record.value == b"long":
            await asyncio.sleep(KEEPALIVE_POLL_S * 4)
        done.append(record.value or b"")
        if len(done) == 3:
            all_done.set()
        return True

    loop = Loop(settings, name, handle)
    await loop.start()
    try:
        for value in (b"short", b"long", b"short"):
            await producer.send_and_wait(name, value, partition=0)
        sampler = asyncio.create_task(loop.sample_paused(sampling_done))
        await asyncio.wait_for(all_done.wait(), 30)
        await asyncio.sleep(0.2)
        sampling_done.set()
        await sampler
        assigned = loop.consumer.assignment()
        assert done == [b"short", b"long", b"short"]
        assert assigned in loop.paused_seen, "while the long job ran, every assigned partition was paused"
        assert loop.consumer.paused() == set(), "resumed once the job was over"
        assert await loop.committed() == 3
    finally:
        await loop.close()


async def test_short_jobs_never_pause(topic: Any) -> None:
    settings, name, producer = topic
    done: list[int] = []
    all_done, sampling_done = asyncio.Event(), asyncio.Event()

    async def handle(record: ConsumerRecord[bytes, bytes]) -> bool:
        await asyncio.sleep(0.05)
        done.append(record.offset)
        if len(done) == 5:
            all_done.set()
        return True

    loop = Loop(settings, name, handle)
    await loop.start()
    try:
        sampler = asyncio.create_task(loop.sample_paused(sampling_done))
        for n in range(5):
            await producer.send_and_wait(name, b"job %d" % n, partition=1)
        await asyncio.wait_for(all_done.wait(), 30)
        sampling_done.set()
        await sampler
        assert done == [0, 1, 2, 3, 4] and all(not paused for paused in loop.paused_seen)
        assert await loop.committed(1) == 5
    finally:
        await loop.close()


async def test_shutdown_gives_the_job_its_grace_then_abandons_it_uncommitted(topic: Any) -> None:
    settings, name, producer = topic
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def handle(record: ConsumerRecord[bytes, bytes]) -> bool:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return True

    loop = Loop(settings, name, handle, grace_s=1.0)
    await loop.start()
    try:
        await producer.send_and_wait(name, b"endless", partition=0)
        await asyncio.wait_for(started.wait(), 30)
        loop.shutdown.request()
        await asyncio.sleep(0.5)
        assert loop.shutdown_calls == 1 and not cancelled.is_set(), "within the grace period the job runs on"
        await loop.finished()
        assert cancelled.is_set() and loop.shutdown_calls == 1
        assert await loop.committed() is None, "an abandoned job is redelivered"
    finally:
        await loop.close()


async def test_a_job_that_stops_early_on_shutdown_is_left_uncommitted(topic: Any) -> None:
    settings, name, producer = topic
    started = asyncio.Event()
    results: list[str] = []

    async def handle(record: ConsumerRecord[bytes, bytes]) -> bool:
        started.set()
        await loop.stop_requested.wait()  # a trainer checkpoints at its next step, then stops
        results.append("interrupted")
        return False

    loop = Loop(settings, name, handle, grace_s=30.0)
    await loop.start()
    try:
        await producer.send_and_wait(name, b"training", partition=0)
        await asyncio.wait_for(started.wait(), 30)
        loop.shutdown.request()
        await loop.finished(timeout_s=10)
        assert results == ["interrupted"] and await loop.committed() is None
    finally:
        await loop.close()


async def test_a_second_signal_abandons_the_job_at_once(topic: Any) -> None:
    settings, name, producer = topic
    started = asyncio.Event()

    async def handle(record: ConsumerRecord[bytes, bytes]) -> bool:
        started.set()
        await asyncio.sleep(3600)
        return True

    loop = Loop(settings, name, handle, grace_s=3600.0)
    await loop.start()
    try:
        await producer.send_and_wait(name, b"endless", partition=0)
        await asyncio.wait_for(started.wait(), 30)
        loop.shutdown.request()
        loop.shutdown.request()
        await loop.finished(timeout_s=5)
        assert await loop.committed() is None
    finally:
        await loop.close()


async def test_the_next_job_overlaps_but_offsets_are_committed_in_order(topic: Any) -> None:
    settings, name, producer = topic
    first_computing, release_first, second_done = asyncio.Event(), asyncio.Event(), asyncio.Event()
    order: list[str] = []

    async def handle(record: ConsumerRecord[bytes, bytes], ready: asyncio.Event) -> bool:
        if record.value == b"first":
            ready.set()  # reached its compute phase: the next record may be prepared
            first_computing.set()
            await release_first.wait()
            order.append("first")
        else:
            order.append("second")
            second_done.set()
        return True

    loop = Loop(settings, name, handle)
    await loop.start()
    try:
        await producer.send_and_wait(name, b"first", partition=0)
        await producer.send_and_wait(name, b"second", partition=0)
        await asyncio.wait_for(second_done.wait(), 30)
        assert order == ["second"], "the second job ran while the first was still computing"
        await asyncio.sleep(KEEPALIVE_POLL_S * 2)
        assert await loop.committed() is None, "the second offset waits for the first job's final event"
        release_first.set()
        for _ in range(100):
            if await loop.committed() == 2:
                break
            await asyncio.sleep(0.05)
        assert order == ["second", "first"] and await loop.committed() == 2
    finally:
        await loop.close()


async def test_a_job_not_ready_holds_the_next_record_back(topic: Any) -> None:
    settings, name, producer = topic
    release_first = asyncio.Event()
    started: list[bytes] = []

    async def handle(record: ConsumerRecord[bytes, bytes], ready: asyncio.Event) -> bool:
        started.append(record.value or b"")
        if record.value == b"first":
            await release_first.wait()  # never signals ready: like a job that does not use `compute()`
        return True

    loop = Loop(settings, name, handle)
    await loop.start()
    try:
        await producer.send_and_wait(name, b"first", partition=1)
        await producer.send_and_wait(name, b"second", partition=1)
        await asyncio.sleep(KEEPALIVE_POLL_S * 3)
        assert started == [b"first"]
        release_first.set()
        for _ in range(100):
            if await loop.committed(1) == 2:
                break
            await asyncio.sleep(0.05)
        assert started == [b"first", b"second"] and await loop.committed(1) == 2
    finally:
        await loop.close()


async def test_fetched_records_with_equal_keys_run_as_one_batch_and_commits_wait_for_earlier_records(
    topic: Any,
) -> None:
    settings, name, producer = topic
    release_blocker, release_batch, b_done = asyncio.Event(), asyncio.Event(), asyncio.Event()
    groups: list[list[bytes]] = []

    async def handle_group(records: list[ConsumerRecord[bytes, bytes]], ready: asyncio.Event) -> bool:
        values = [record.value or b"" for record in records]
        groups.append(values)
        if values == [b"blocker"]:
            await release_blocker.wait()  # not ready: everything after it stays queued
        elif values[0].startswith(b"a"):
            ready.set()
            await release_batch.wait()
        else:
            b_done.set()
        return True

    def key(record: ConsumerRecord[bytes, bytes]) -> str | None:
        value = record.value or b""
        return None if value == b"blocker" else value[:1].decode()

    unused = _whole(lambda record: asyncio.sleep(0, result=True))
    loop = Loop(settings, name, unused, batching=Batching(key, handle_group, max_batch=3))
    await loop.start()
    try:
        await producer.send_and_wait(name, b"blocker", partition=0)
        for _ in range(100):
            if groups:
                break
            await asyncio.sleep(0.05)
        for value, partition in ((b"a1", 0), (b"b1", 0), (b"a2", 0), (b"a3", 1), (b"a4", 1)):
            await producer.send_and_wait(name, value, partition=partition)
        await asyncio.sleep(KEEPALIVE_POLL_S * 2)
        release_blocker.set()
        await asyncio.wait_for(b_done.wait(), 30)
        # The partitions' records come in either order; within a partition, in offset order.
        assert groups[0] == [b"blocker"] and groups[2] == [b"b1"], groups
        assert len(groups[1]) == 3 and all(value.startswith(b"a") for value in groups[1]), groups
        await asyncio.sleep(KEEPALIVE_POLL_S * 2)
        assert await loop.committed(0) == 1, "b1 is final but a1 before it is not"
        release_batch.set()
        for _ in range(100):
            if await loop.committed(0) == 4 and await loop.committed(1) == 2:
                break
            await asyncio.sleep(0.05)
        assert (await loop.committed(0), await loop.committed(1)) == (4, 2)
        assert len(groups) == 4 and sorted(groups[1] + groups[3]) == [b"a1", b"a2", b"a3", b"a4"], groups
    finally:
        await loop.close()


async def test_jobs_past_the_engine_let_more_in_and_commits_never_pass_an_unfinished_job(topic: Any) -> None:
    settings, name, producer = topic
    seen: list[bytes] = []
    commits: list[dict[TopicPartition, int]] = []

    async def handle(record: ConsumerRecord[bytes, bytes], ready: JobSignal) -> bool:
        seen.append(record.value or b"")
        ready.set()
        if record.value == b"r0":
            await asyncio.sleep(3600)  # computing, never over: killed with its process
        ready.release()  # past the engine: finishing
        await asyncio.sleep(0.05)
        return True

    loop = Loop(settings, name, handle)
    real_commit = loop.consumer.commit

    async def counted(offsets: dict[TopicPartition, int]) -> None:
        commits.append(dict(offsets))
        await real_commit(offsets)

    loop.consumer.commit = counted  # type: ignore[method-assign]
    await loop.start()
    try:
        for n in range(5):
            await producer.send_and_wait(name, f"r{n}".encode(), partition=0)
        for _ in range(200):
            if len(seen) == 5:
                break
            await asyncio.sleep(0.05)
        assert seen == [b"r0", b"r1", b"r2", b"r3", b"r4"], "r1..r4 ran while r0 was still computing"
        await asyncio.sleep(KEEPALIVE_POLL_S * 2)
        assert commits == [] and await loop.committed() is None, "nothing passes r0, which is not final"
    finally:
        assert loop.task is not None
        loop.task.cancel()  # the process dies: r0 never ends
        with contextlib.suppress(asyncio.CancelledError):
            await loop.task
        await loop.consumer.stop()
    redone: list[bytes] = []

    async def again(record: ConsumerRecord[bytes, bytes]) -> bool:
        redone.append(record.value or b"")
        return True

    next_owner = Loop(settings, name, again, group=loop.group)
    await next_owner.start()
    try:
        for _ in range(300):
            if len(redone) >= 5:
                break
            await asyncio.sleep(0.05)
        assert redone[:5] == [b"r0", b"r1", b"r2", b"r3", b"r4"], "every record from the unfinished one on"
    finally:
        await next_owner.close()


async def test_commits_of_jobs_final_meanwhile_go_out_together(topic: Any) -> None:
    settings, name, producer = topic
    commits: list[int] = []

    async def handle(record: ConsumerRecord[bytes, bytes], ready: JobSignal) -> bool:
        ready.release()
        return True

    loop = Loop(settings, name, handle)
    real_commit = loop.consumer.commit

    async def slow(offsets: dict[TopicPartition, int]) -> None:
        commits.extend(offsets.values())
        await asyncio.sleep(0.2)  # a slow broker: jobs keep ending meanwhile
        await real_commit(offsets)

    loop.consumer.commit = slow  # type: ignore[method-assign]
    for n in range(30):
        await producer.send(name, f"j{n}".encode(), partition=1)
    await producer.flush()
    await loop.start()
    try:
        for _ in range(200):
            if await loop.committed(1) == 30:
                break
            await asyncio.sleep(0.05)
        assert await loop.committed(1) == 30
        assert commits == sorted(commits) and len(commits) < 30, commits
    finally:
        await loop.close()
