"""Long jobs from a Kafka consumer group without rebalances: the pieces of the job loop (docs/consumer.md).

Partitions are paused while jobs outlive a poll wait, polling is kept up (`keepalive_poll`), an offset is
committed only after its job says so (`commit_offset`), and shutdown is two-staged (`Shutdown`). The loop
itself, with the next job prepared while one computes, is `pipeline.consume_pipelined`. Blocking work
runs in a daemon thread (`run_in_daemon_thread`) so the event loop keeps polling and heartbeating.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import signal
import threading
import time
from collections.abc import Callable
from typing import ClassVar, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from acefarm.infra.kafka import make_consumer
from acefarm.infra.logging import get_logger
from acefarm.infra.settings import Settings

log = get_logger(__name__)
T = TypeVar("T")

KEEPALIVE_POLL_S = 0.5
"""How often the consumer polls (with every partition paused) while a job runs."""


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
    """Run `fn` in a daemon worker thread; the returned future resolves with its result or exception.

    A daemon thread (not the default executor) so that a process abandoning a job on shutdown can
    exit without waiting for the model. Threads are long-lived and reused (an idle one takes the
    call; one is started only when none is idle), so a job does not pay a thread start. The caller's
    context variables (structlog's `task_id`) are carried into the thread.
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

    def call() -> None:
        try:
            result, error = context.run(fn), None
        except BaseException as caught:  # handed to the awaiting coroutine
            result, error = None, caught
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
            loop.call_soon_threadsafe(settle, result, error)

    _DaemonThreads.submit(call, name)
    return future


class _DaemonThreads:
    """Idle daemon threads waiting for a call; a thread goes back to the idle list after each call."""

    _lock = threading.Lock()
    _idle: ClassVar[list[queue.SimpleQueue[Callable[[], None]]]] = []

    @classmethod
    def submit(cls, call: Callable[[], None], name: str) -> None:
        with cls._lock:
            inbox = cls._idle.pop() if cls._idle else None
        if inbox is None:
            inbox = queue.SimpleQueue()
            threading.Thread(target=cls._serve, args=(inbox,), name=name, daemon=True).start()
        inbox.put(call)

    @classmethod
    def _serve(cls, inbox: queue.SimpleQueue[Callable[[], None]]) -> None:
        while True:
            inbox.get()()
            with cls._lock:
                cls._idle.append(inbox)


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


async def keepalive_poll(consumer: AIOKafkaConsumer) -> None:
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


def pause_all(consumer: AIOKafkaConsumer) -> None:
    """Pause every assigned partition (a paused partition's prefetched records are dropped)."""
    assigned = consumer.assignment()
    if assigned:
        consumer.pause(*assigned)


def resume_all(consumer: AIOKafkaConsumer) -> None:
    """Resume every assigned partition."""
    assigned = consumer.assignment()
    if assigned:
        consumer.resume(*assigned)


def _names(partitions: list[TopicPartition]) -> list[str]:
    return sorted(f"{tp.topic}[{tp.partition}]" for tp in partitions)
