"""Long jobs from a Kafka consumer group without rebalances: one record at a time, partitions paused
while the job runs, polling kept up, offset committed only after the job says so (docs/consumer.md).

Generic (no service code): the GPU consumer and the trainer both run their jobs through
`consume_one_at_a_time`. Blocking work runs in a daemon thread (`run_in_daemon_thread`) so the event
loop keeps polling and heartbeating.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import signal
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from acefarm.infra.kafka import make_consumer
from acefarm.infra.logging import get_logger
from acefarm.infra.settings import Settings

log = get_logger(__name__)
T = TypeVar("T")

KEEPALIVE_POLL_S = 0.5
"""How often the consumer polls (with every partition paused) while a job runs."""

Handler = Callable[[ConsumerRecord[bytes, bytes]], Coroutine[Any, Any, bool]]
"""Processes one record; returns True when its offset may be committed (its final event is acknowledged)."""


class Shutdown:
    """SIGTERM/SIGINT state: the first signal stops taking jobs, a second abandons the running one."""

    def __init__(self) -> None:
        self.requested = asyncio.Event()
        self.abandon = asyncio.Event()

    def request(self, reason: str = "requested") -> None:
        """Stop taking jobs; a second request abandons the running job."""
        if self.requested.is_set():
            if not self.abandon.is_set():
                log.warning("consumer.abandoning_job", reason=reason)
            self.abandon.set()
            return
        log.info("consumer.stopping", reason=reason)
        self.requested.set()

    def install(self) -> None:
        """Handle SIGTERM and SIGINT on the running loop."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request, sig.name)


def run_in_daemon_thread(fn: Callable[[], T], name: str) -> asyncio.Future[T]:
    """Start `fn` in a new daemon thread; the returned future resolves with its result or exception.

    A daemon thread (not the default executor) so that a process abandoning a job on shutdown can
    exit without waiting for the model. The caller's context variables (structlog's `task_id`) are
    carried into the thread.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    context = contextvars.copy_context()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def target() -> None:
        try:
            result, error = context.run(fn), None
        except BaseException as caught:  # handed to the awaiting coroutine
            result, error = None, caught
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=target, name=name, daemon=True).start()
    return future


class PausingListener(ConsumerRebalanceListener):
    """Re-pauses newly assigned partitions while a job runs; records how long the first join took."""

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self._consumer = consumer
        self.job_running = False
        self.started_at = time.monotonic()
        self.join_seconds: float | None = None
        self.assignments = 0
        """How many assignments this consumer has had; a change during a job means a rebalance."""

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        """Log the revocation; a running job keeps running (its commit may then fail, see docs)."""
        if revoked:
            log.info("kafka.partitions_revoked", partitions=_names(revoked), job_running=self.job_running)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        """Pause the new assignment if a job is running, so no second job is fetched."""
        self.assignments += 1
        if self.join_seconds is None:
            self.join_seconds = time.monotonic() - self.started_at
            log.info("kafka.group_joined", seconds=round(self.join_seconds, 3), partitions=_names(assigned))
        else:
            log.info("kafka.partitions_assigned", partitions=_names(assigned), job_running=self.job_running)
        if self.job_running and assigned:
            self._consumer.pause(*assigned)


def make_job_consumer(settings: Settings, group_id: str, group_instance_id: str | None = None) -> AIOKafkaConsumer:
    """A group consumer for long jobs: one record per poll, manual commits (not started, not subscribed).

    Polling continues while a job runs, so `max_poll_interval_ms` only has to cover the gap between
    polls, never a job: it is kept short, so a wedged loop is noticed and its partitions move.
    """
    return make_consumer(
        settings,
        group_id=group_id,
        max_poll_records=1,
        max_poll_interval_ms=max(settings.kafka_session_timeout_ms, settings.kafka_rebalance_timeout_ms),
        group_instance_id=group_instance_id,
    )


async def consume_one_at_a_time(
    consumer: AIOKafkaConsumer,
    listener: PausingListener,
    handle: Handler,
    shutdown: Shutdown,
    *,
    grace_s: float,
    on_shutdown: Callable[[], None] | None = None,
    until: Callable[[], bool] | None = None,
) -> None:
    """Fetch one record at a time and run `handle` on it with every partition paused, polling meanwhile.

    On shutdown during a job, `on_shutdown` is called once (e.g. to checkpoint and stop early); the job
    gets `grace_s` to return, else it is cancelled and its offset stays uncommitted (redelivered).
    `until` is asked after each job (after its commit): True returns at once (e.g. the job was wedged).
    """
    while not shutdown.requested.is_set():
        batch = await consumer.getmany(timeout_ms=1000, max_records=1)
        for records in batch.values():
            for record in records:
                if shutdown.requested.is_set():
                    return  # not started, not committed: the next owner takes it
                await _run_in_group(consumer, listener, handle, record, shutdown, grace_s, on_shutdown)
                if until is not None and until():
                    return


async def _run_in_group(
    consumer: AIOKafkaConsumer,
    listener: PausingListener,
    handle: Handler,
    record: ConsumerRecord[bytes, bytes],
    shutdown: Shutdown,
    grace_s: float,
    on_shutdown: Callable[[], None] | None,
) -> None:
    """Run one job while staying in the group; commit its offset once the job allows it."""
    tp = TopicPartition(record.topic, record.partition)
    job: asyncio.Task[bool] = asyncio.create_task(handle(record), name=f"job-{record.partition}-{record.offset}")
    listener.job_running = True
    assignments = listener.assignments
    # Partitions are paused only once the job outlives the first wait: pausing drops the records
    # already fetched, so a short job that never pauses lets the next one start from the buffer.
    paused = False
    try:
        deadline: float | None = None
        while not job.done():
            if shutdown.requested.is_set() and deadline is None:
                deadline = time.monotonic() + grace_s
                log.info("consumer.waiting_for_job", grace_s=grace_s)
                if on_shutdown is not None:
                    on_shutdown()
            if shutdown.abandon.is_set() or (deadline is not None and time.monotonic() > deadline):
                job.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await job
                log.warning("consumer.job_abandoned", partition=record.partition, offset=record.offset)
                return  # offset left uncommitted: the job is redelivered
            await asyncio.wait({job}, timeout=KEEPALIVE_POLL_S)
            if not job.done():
                if not paused:
                    _pause_all(consumer)
                    paused = True
                await _keepalive_poll(consumer)
        if job.result():  # a publish failure propagates: stop without committing
            rebalanced = listener.assignments != assignments
            await commit_offset(consumer, tp, record.offset + 1, reseek=rebalanced)
        else:
            log.info("consumer.job_left_uncommitted", partition=record.partition, offset=record.offset)
    finally:
        listener.job_running = False
        if paused or listener.assignments != assignments:
            _resume_all(consumer)


async def _keepalive_poll(consumer: AIOKafkaConsumer) -> None:
    """Poll with everything paused so the client does not count the consumer as stalled."""
    stray = await consumer.getmany(timeout_ms=0)
    for tp, records in stray.items():  # cannot happen while paused; never lose one if it does
        if records:
            consumer.seek(tp, records[0].offset)


async def commit_offset(consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int, *, reseek: bool) -> None:
    """Commit `offset` for `tp`; with `reseek` (a rebalance happened meanwhile) also move the position
    there. A failed commit is logged.

    A commit fails when the partition moved during a rebalance: its new owner redoes the job, and the
    status fold keeps the first terminal state, so the duplicate outcome is harmless.
    """
    try:
        await consumer.commit({tp: offset})
    except KafkaError as error:
        log.warning("consumer.commit_failed", partition=tp.partition, offset=offset, error=repr(error))
        return
    if reseek and tp in consumer.assignment():
        consumer.seek(tp, offset)  # after a rebalance the position was reset to the old commit


def _pause_all(consumer: AIOKafkaConsumer) -> None:
    """Pause every assigned partition (a paused partition's prefetched records are dropped)."""
    assigned = consumer.assignment()
    if assigned:
        consumer.pause(*assigned)


def _resume_all(consumer: AIOKafkaConsumer) -> None:
    assigned = consumer.assignment()
    if assigned:
        consumer.resume(*assigned)


def _names(partitions: list[TopicPartition]) -> list[str]:
    return sorted(f"{tp.topic}[{tp.partition}]" for tp in partitions)
