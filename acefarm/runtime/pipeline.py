"""Two jobs in flight so the engine never waits (docs/consumer.md, "Overlap"): while job N computes,
job N+1 is fetched and prepared (cancel catch-up, attempts read, inputs fetched and decoded); N's
encoding, upload and final event overlap N+1's compute.

`ComputeSlot` hands the engine from one job to the next; `consume_pipelined` is the group loop that
keeps up to two records in flight. Offsets are committed strictly in order, each only after its own
job says so (its final event acknowledged), so a crash redelivers every job not yet final.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from acefarm.infra.logging import get_logger
from acefarm.infra.metrics import ENGINE_IDLE_SECONDS
from acefarm.runtime.group_loop import (
    KEEPALIVE_POLL_S,
    PausingListener,
    Shutdown,
    commit_offset,
    keepalive_poll,
    pause_all,
    resume_all,
)

log = get_logger(__name__)

DEPTH = 2
"""Records in flight at most: the one computing and the one being prepared."""

PipelinedHandler = Callable[[ConsumerRecord[bytes, bytes], asyncio.Event], Coroutine[Any, Any, bool]]
"""Processes one record; sets the event once the next record may be taken (the job reached its compute
phase, or is over); returns True when its offset may be committed."""


class ComputeSlot:
    """The engine, one job at a time; the waiting job takes it the moment the holder releases it.

    Each time a job that had to wait for the engine begins computing, the seconds since the previous
    compute phase ended are observed in `acefarm_engine_idle_seconds` and kept in `gaps`: how long the
    engine stood idle between two queued jobs (the handover: attempt recorded, `TaskStarted`, the call).
    """

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._computed_at: float | None = None
        self.gaps: deque[float] = deque(maxlen=10_000)

    def locked(self) -> bool:
        """Whether a job holds the engine."""
        return self._lock.locked()

    async def acquire(self) -> None:
        """Wait for the engine."""
        await self._lock.acquire()

    def release(self) -> None:
        """Hand the engine to the next job."""
        self._lock.release()

    def compute_started(self, waited: bool) -> None:
        """A job begins its engine call; `waited`: it was queued behind the previous one."""
        if waited and self._computed_at is not None:
            gap = time.perf_counter() - self._computed_at
            self.gaps.append(gap)
            ENGINE_IDLE_SECONDS.observe(gap)

    def compute_ended(self) -> None:
        """A job's engine call returned."""
        self._computed_at = time.perf_counter()


@dataclass
class _InFlight:
    record: ConsumerRecord[bytes, bytes]
    task: asyncio.Task[bool]
    ready: asyncio.Event
    assignments: int
    """The listener's assignment count when the job started; a change means a rebalance since."""

    @property
    def tp(self) -> TopicPartition:
        return TopicPartition(self.record.topic, self.record.partition)


async def consume_pipelined(
    consumer: AIOKafkaConsumer,
    listener: PausingListener,
    handle: PipelinedHandler,
    shutdown: Shutdown,
    *,
    grace_s: float,
    on_shutdown: Callable[[], None] | None = None,
    until: Callable[[], bool] | None = None,
) -> None:
    """Run records through `handle` with up to `DEPTH` in flight, polling meanwhile; commit in order.

    A record is taken only once every job in flight has set its `ready` event, and never after a
    rebalance until the jobs in flight are over. On shutdown no record is taken, `on_shutdown` is
    called once and the jobs in flight get `grace_s` to end (else they are cancelled, uncommitted).
    A job that is not to be committed (interrupted) stops the loop: nothing after it is committed.
    `until` is asked after each commit: True cancels whatever is in flight (uncommitted) and returns.
    """
    inflight: deque[_InFlight] = deque()
    fetch: asyncio.Task[dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]] | None = None
    paused = False
    grace_deadline: float | None = None
    try:
        while True:
            listener.job_running = bool(inflight)
            while inflight and inflight[0].task.done():
                job = inflight.popleft()
                if not job.task.result():  # a publish failure propagates: stop without committing
                    log.info("consumer.job_left_uncommitted", partition=job.record.partition, offset=job.record.offset)
                    return
                rebalanced = listener.assignments != job.assignments
                reseek = rebalanced and not any(later.tp == job.tp for later in inflight)
                await commit_offset(consumer, job.tp, job.record.offset + 1, reseek=reseek)
                if until is not None and until():
                    return
            if shutdown.requested.is_set():
                if not inflight:
                    return
                if grace_deadline is None:
                    grace_deadline = time.monotonic() + grace_s
                    log.info("consumer.waiting_for_job", grace_s=grace_s, jobs=len(inflight))
                    if on_shutdown is not None:
                        on_shutdown()
                if shutdown.abandon.is_set() or time.monotonic() > grace_deadline:
                    for job in inflight:
                        log.warning("consumer.job_abandoned", partition=job.record.partition, offset=job.record.offset)
                    return
            may_take = (
                not shutdown.requested.is_set()
                and len(inflight) < DEPTH
                and all(job.ready.is_set() and job.assignments == listener.assignments for job in inflight)
            )
            if may_take:
                if paused:
                    resume_all(consumer)
                    paused = False
                if fetch is None:
                    wait_ms = KEEPALIVE_POLL_S * 1000 if inflight else 1000
                    fetch = asyncio.create_task(consumer.getmany(timeout_ms=int(wait_ms), max_records=1))
                await asyncio.wait({fetch, *(job.task for job in inflight)}, return_when=asyncio.FIRST_COMPLETED)
                if fetch.done():
                    batch, fetch = fetch.result(), None
                    for records in batch.values():
                        for record in records:
                            ready = asyncio.Event()
                            task = asyncio.create_task(
                                handle(record, ready), name=f"job-{record.partition}-{record.offset}"
                            )
                            inflight.append(_InFlight(record, task, ready, listener.assignments))
                continue
            if fetch is not None:  # taking stopped (shutdown, rebalance) while a poll was out: give back its record
                batch, fetch = await fetch, None
                for tp, records in batch.items():
                    if records:
                        consumer.seek(tp, records[0].offset)
            waits: set[asyncio.Future[Any]] = {job.task for job in inflight}
            waits |= {asyncio.ensure_future(job.ready.wait()) for job in inflight if not job.ready.is_set()}
            done, pending = await asyncio.wait(waits, timeout=KEEPALIVE_POLL_S, return_when=asyncio.FIRST_COMPLETED)
            for waiter in pending:
                if waiter not in {job.task for job in inflight}:
                    waiter.cancel()
            if not done:
                # Paused only once the jobs outlive a wait: pausing drops the records already fetched.
                if not paused:
                    pause_all(consumer)
                    paused = True
                await keepalive_poll(consumer)
    finally:
        listener.job_running = False
        if fetch is not None:
            fetch.cancel()
            with contextlib.suppress(BaseException):
                await fetch
        for job in inflight:  # not committed: redelivered to the next owner
            job.task.cancel()
        for job in inflight:
            with contextlib.suppress(BaseException):
                await job.task
        if paused:
            resume_all(consumer)


class Claim:
    """One job's hold on a `ComputeSlot`, and its `ready` signal to the loop (the next record may be taken)."""

    def __init__(self, slot: ComputeSlot, ready: asyncio.Event | None) -> None:
        self._slot = slot
        self._ready = ready
        self._held = False
        self._waited = False
        self._computing = False

    async def take(self) -> None:
        """Wait for the engine (the previous job's compute to end)."""
        self._waited = self._slot.locked()
        await self._slot.acquire()
        self._held = True

    def computing(self) -> None:
        """The job begins its engine call: the next record may be fetched and prepared."""
        if self._held and not self._computing:
            self._computing = True
            self._slot.compute_started(self._waited)
        if self._ready is not None:
            self._ready.set()

    def release(self) -> None:
        """The engine call is over (or the job is): give the engine to the next job and let the loop take a
        record; idempotent."""
        if self._held:
            if self._computing:
                self._slot.compute_ended()
            self._held = False
            self._slot.release()
        if self._ready is not None:
            self._ready.set()
