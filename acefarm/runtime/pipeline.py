"""Jobs in flight so the engine never waits (docs/consumer.md, "Overlap"): while job N computes, job N+1 is
fetched and prepared (cancel catch-up, attempts read, inputs fetched and decoded); N's encoding, upload and
final event overlap N+1's compute, and once N+1 computes, N+2 is taken even if N is still finishing.

`ComputeSlot` hands the engine from one job to the next; `consume_pipelined` is the group loop that keeps
the jobs in flight. Offsets are committed strictly in order, each only past jobs that say so (their final
event acknowledged), so a crash redelivers every job not yet final; commits run beside the loop, one at a
time, each covering every job that became final meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Coroutine, Hashable
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

DEPTH = 3
"""Jobs (or batches) in flight that still need the engine, at most: the one computing, and up to two behind it (one
being prepared, and with `early` claims one prepared and waiting for the engine)."""
FINISHING = 2
"""Jobs (or batches) past their engine call (encoding, uploading, publishing their final event) that may stay in
flight beside those, at most; each holds its results in memory until it is over."""
LOOKAHEAD = 4
"""With batching, the loop holds up to this many times `max_batch` fetched records to pick a batch from."""


class JobSignal(asyncio.Event):
    """What a job in flight tells the loop: set (an `asyncio.Event`) once the next record may be taken (the job
    reached its compute phase, or is over); `release()` once the job no longer needs the engine (its call
    returned: it is finishing, or it is over). A job that only sets it counts as needing the engine until it is
    over. Either wakes the loop (`wake`)."""

    def __init__(self, wake: asyncio.Event) -> None:
        super().__init__()
        self._wake = wake
        self.released = False

    def set(self) -> None:
        """The next record may be taken."""
        super().set()
        self._wake.set()

    def release(self) -> None:
        """The job is done with the engine (and the next record may be taken)."""
        self.released = True
        self.set()


PipelinedHandler = Callable[[ConsumerRecord[bytes, bytes], JobSignal], Coroutine[Any, Any, bool]]
"""Processes one record; sets the signal once the next record may be taken (the job reached its compute
phase, or is over), releases it once past the engine; returns True when its offset may be committed."""


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


GroupHandler = Callable[[list[ConsumerRecord[bytes, bytes]], JobSignal], Coroutine[Any, Any, bool]]
"""Processes a batch of records (one shared engine call, see `Batching`); like `PipelinedHandler`, True when
every record's offset may be committed."""


@dataclass(frozen=True)
class Batching:
    """Records the loop runs together (docs/consumer.md, "Batching"): when it takes a record, it also takes the
    records it has already fetched (it never waits for more; up to `LOOKAHEAD` × `max_batch` held) whose `key`
    equals the record's, up to `max_batch` in all, across partitions, and hands them to `handle` as one batch.
    A None key is never batched."""

    key: Callable[[ConsumerRecord[bytes, bytes]], Hashable | None]
    handle: GroupHandler
    max_batch: int


@dataclass
class _InFlight:
    records: list[ConsumerRecord[bytes, bytes]]
    task: asyncio.Task[bool]
    ready: JobSignal
    assignments: int
    """The listener's assignment count when the job started; a change means a rebalance since."""


@dataclass
class _Fetched:
    """A record fetched but not yet started, with its batch key."""

    record: ConsumerRecord[bytes, bytes]
    key: Hashable | None
    assignments: int


def _tp(record: ConsumerRecord[bytes, bytes]) -> TopicPartition:
    return TopicPartition(record.topic, record.partition)


async def consume_pipelined(
    consumer: AIOKafkaConsumer,
    listener: PausingListener,
    handle: PipelinedHandler,
    shutdown: Shutdown,
    *,
    grace_s: float,
    on_shutdown: Callable[[], None] | None = None,
    until: Callable[[], bool] | None = None,
    batching: Batching | None = None,
) -> None:
    """Run records through `handle` (or batches of them through `batching.handle`) with up to `DEPTH` jobs that
    need the engine and `FINISHING` more past it in flight, polling meanwhile; commit in order.

    A record is taken only once every job in flight has set its signal, and never after a rebalance until
    the jobs in flight are over. On shutdown no record is taken, `on_shutdown` is called once and the jobs
    in flight get `grace_s` to end (else they are cancelled, uncommitted). A job that is not to be committed
    (interrupted) stops the loop: nothing after it is committed. A partition's offset is committed only past
    records that are all final (a batch may hold a later record of a partition than a job still to run).
    One commit is out at a time, beside the loop; the next covers every job that became final meanwhile,
    and the loop returns only once what became final is committed. `until` is asked whenever jobs became
    final: True commits them, cancels whatever is in flight (uncommitted) and returns.
    """
    inflight: deque[_InFlight] = deque()
    fetched: list[_Fetched] = []
    held: dict[TopicPartition, int] = {}
    final_ahead: dict[TopicPartition, tuple[int, int]] = {}
    """Per partition, the latest final record waiting behind an earlier one still pending (a batch may take a
    partition's later record before an earlier one of another key), with the assignment count it belongs to."""
    """Per partition, the earliest record given back and not fetched again: no commit passes it (a batch
    may have taken later records of that partition)."""
    max_batch = batching.max_batch if batching is not None else 1
    window = max_batch * LOOKAHEAD if max_batch > 1 else 1
    fetch: asyncio.Task[dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]] | None = None
    paused = False
    grace_deadline: float | None = None
    wake = asyncio.Event()
    """Set by any job's signal: a job may let the next record in."""
    final: dict[TopicPartition, tuple[int, bool]] = {}
    """Offsets final and not yet committed (with whether the position moves there too)."""
    committing: asyncio.Task[None] | None = None

    def keep(batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        for tp, records in batch.items():
            if records and records[0].offset <= held.get(tp, -1):
                del held[tp]
            for record in records:
                key = batching.key(record) if batching is not None else None
                fetched.append(_Fetched(record, key, listener.assignments))

    def start(group: list[ConsumerRecord[bytes, bytes]]) -> None:
        ready = JobSignal(wake)
        head = group[0]
        name = f"job-{head.partition}-{head.offset}" + (f"+{len(group) - 1}" if len(group) > 1 else "")
        work = batching.handle(group, ready) if batching is not None else handle(head, ready)
        task = asyncio.create_task(work, name=name)
        inflight.append(_InFlight(group, task, ready, listener.assignments))

    def send_commit() -> None:
        nonlocal committing
        if committing is not None and committing.done():
            answered, committing = committing, None
            answered.result()  # an unexpected error (Kafka errors are logged by `commit_offset`)
        if final and committing is None:
            committing = asyncio.create_task(_commit(consumer, dict(final)), name="commit")
            final.clear()

    async def flush() -> None:
        nonlocal committing
        if committing is not None:
            await committing
            committing = None
        send_commit()
        if committing is not None:
            await committing
            committing = None

    try:
        while True:
            listener.job_running = bool(inflight)
            wake.clear()
            popped: list[_InFlight] = []
            while inflight and inflight[0].task.done():
                job = inflight.popleft()
                if not job.task.result():  # a publish failure propagates: stop without committing
                    head = job.records[0]
                    log.info("consumer.job_left_uncommitted", partition=head.partition, offset=head.offset)
                    return
                popped.append(job)
            if popped:
                for tp, (offset, reseek) in _final_offsets(
                    listener, popped, inflight, fetched, held, final_ahead
                ).items():
                    final[tp] = (max(offset, final.get(tp, (offset, False))[0]), reseek)
                if until is not None and until():
                    return
            send_commit()
            if any(f.assignments != listener.assignments for f in fetched):
                _give_back(consumer, [f.record for f in fetched], held)  # fetched before a rebalance: fetch again
                fetched.clear()
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
                        head = job.records[0]
                        log.warning("consumer.job_abandoned", partition=head.partition, offset=head.offset)
                    return
            needing_engine = sum(not job.ready.released for job in inflight)
            may_take = (
                not shutdown.requested.is_set()
                and needing_engine < DEPTH
                and len(inflight) < DEPTH + FINISHING
                and all(job.ready.is_set() and job.assignments == listener.assignments for job in inflight)
            )
            # Two already wait behind the engine: the next is taken only as a full batch, so that records
            # still arriving can join it (a backlog fills every batch anyway).
            ahead = needing_engine >= DEPTH - 1
            commit_wait = {committing} if committing is not None else set()
            if may_take:
                if paused:
                    resume_all(consumer)
                    paused = False
                if fetched and len(fetched) < window:  # top up from what the client already holds, without waiting
                    keep(await consumer.getmany(timeout_ms=0, max_records=window - len(fetched)))
                if fetched and (not ahead or _full_group(fetched, max_batch)):
                    start(_take_group(fetched, max_batch))
                    continue
            if may_take and len(fetched) < window:  # wait for records (or, taking ahead, for a full batch)
                if fetch is None:
                    wait_ms = KEEPALIVE_POLL_S * 1000 if inflight else 1000
                    more = window - len(fetched)
                    fetch = asyncio.create_task(consumer.getmany(timeout_ms=int(wait_ms), max_records=more))
                woken = asyncio.ensure_future(wake.wait()) if ahead else None
                waits = {fetch, *commit_wait, *(job.task for job in inflight)} | ({woken} if woken else set())
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                if woken is not None:
                    woken.cancel()
                if fetch.done():
                    batch, fetch = fetch.result(), None
                    keep(batch)
                continue
            if fetch is not None:  # taking stopped (shutdown, rebalance) while a poll was out: give back its record
                batch, fetch = await fetch, None
                _give_back(consumer, [record for records in batch.values() for record in records], held)
            waiter = asyncio.ensure_future(wake.wait())
            pending: set[asyncio.Future[Any]] = {waiter, *commit_wait, *(job.task for job in inflight)}
            done, _ = await asyncio.wait(pending, timeout=KEEPALIVE_POLL_S, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if not done:
                # Paused only once the jobs outlive a wait: pausing drops the records the client prefetched.
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
        try:
            await flush()  # the jobs already final
        except Exception as error:  # the loop's own error (if any) matters more
            log.warning("consumer.commit_failed", error=repr(error))
        if paused:
            resume_all(consumer)


def _full_group(fetched: list[_Fetched], max_batch: int) -> bool:
    """Whether `fetched`'s first record makes a full batch: `max_batch` records with its key, or a record that is
    never batched (no key, or batching off)."""
    head = fetched[0]
    if max_batch == 1 or head.key is None:
        return True
    return sum(item.key == head.key for item in fetched) >= max_batch


def _take_group(fetched: list[_Fetched], max_batch: int) -> list[ConsumerRecord[bytes, bytes]]:
    """Remove from `fetched` its first record and the later ones with the same (non-None) key, up to
    `max_batch` in all; returns them in fetch order."""
    head = fetched.pop(0)
    group = [head.record]
    if head.key is not None:
        for item in list(fetched):
            if len(group) >= max_batch:
                break
            if item.key == head.key:
                fetched.remove(item)
                group.append(item.record)
    return group


def _give_back(
    consumer: AIOKafkaConsumer, records: list[ConsumerRecord[bytes, bytes]], held: dict[TopicPartition, int]
) -> None:
    """Seek each still assigned partition back to the earliest of `records`, so they are fetched again; until
    then no commit passes them (`held`)."""
    earliest: dict[TopicPartition, int] = {}
    for record in records:
        tp = _tp(record)
        earliest[tp] = min(earliest.get(tp, record.offset), record.offset)
    assigned = consumer.assignment()
    for tp, offset in earliest.items():
        held[tp] = min(held.get(tp, offset), offset)
        if tp in assigned:
            consumer.seek(tp, offset)


def _final_offsets(
    listener: PausingListener,
    popped: list[_InFlight],
    inflight: deque[_InFlight],
    fetched: list[_Fetched],
    held: dict[TopicPartition, int],
    final_ahead: dict[TopicPartition, tuple[int, int]],
) -> dict[TopicPartition, tuple[int, bool]]:
    """Per partition of the `popped` jobs (final), the offset past every record that is final: up to the earliest
    record of that partition still in flight, fetched or given back (`held`), else past the popped ones and those
    final earlier but waiting behind a pending record (`final_ahead`, kept up to date here); with whether the position
    moves there too (a rebalance since a popped job started, and nothing later of its partition pending).
    Partitions with nothing new to commit are left out."""
    pending: dict[TopicPartition, int] = {}
    for record in [r for job in inflight for r in job.records] + [f.record for f in fetched]:
        tp = _tp(record)
        pending[tp] = min(pending.get(tp, record.offset), record.offset)
    done: dict[TopicPartition, tuple[int, int, bool]] = {}
    for job in popped:
        rebalanced = listener.assignments != job.assignments
        for record in job.records:
            tp = _tp(record)
            low, high, moved = done.get(tp, (record.offset, record.offset, False))
            done[tp] = (min(low, record.offset), max(high, record.offset), moved or rebalanced)
    for tp, offset in held.items():
        pending[tp] = min(pending.get(tp, offset), offset)
    offsets: dict[TopicPartition, tuple[int, bool]] = {}
    for tp, (low, high, rebalanced) in done.items():
        earlier = final_ahead.pop(tp, None)
        if earlier is not None and earlier[1] == listener.assignments:  # after a rebalance it is redelivered
            high = max(high, earlier[0])
        offset = pending.get(tp, high + 1)
        if offset <= high:
            final_ahead[tp] = (high, listener.assignments)
        if offset > low:
            offsets[tp] = (offset, rebalanced and tp not in pending)
    return offsets


async def _commit(consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, tuple[int, bool]]) -> None:
    """Commit each partition's offset (`commit_offset`; failures are logged)."""
    for tp, (offset, reseek) in offsets.items():
        await commit_offset(consumer, tp, offset, reseek=reseek)


class Claim:
    """One job's (or one batch's) hold on a `ComputeSlot`, and its `ready` signal to the loop (the next record
    may be taken; with a `JobSignal`, also released once past the engine). The members of a batch share one
    claim: the first to `take` it waits for the engine, the others wait with it."""

    def __init__(self, slot: ComputeSlot, ready: asyncio.Event | None, *, early: bool = False) -> None:
        self._slot = slot
        self._ready = ready
        self._early = early
        """Signal `ready` once the job waits for the engine, not only once it computes."""
        self._taking: asyncio.Task[None] | None = None
        self._held = False
        self._waited = False
        self._computing = False

    async def take(self) -> None:
        """Wait for the engine (the previous job's compute to end); at once when already taken. An `early` claim
        lets the loop take the next record now."""
        if self._taking is None:
            self._waited = self._slot.locked()
            self._taking = asyncio.ensure_future(self._acquire())
            if self._early and self._ready is not None:
                self._ready.set()
        await asyncio.shield(self._taking)

    async def _acquire(self) -> None:
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
        if self._taking is not None and not self._taking.done():
            self._taking.cancel()  # nobody waits for the engine any more
        if self._held:
            if self._computing:
                self._slot.compute_ended()
            self._held = False
            self._slot.release()
        if isinstance(self._ready, JobSignal):
            self._ready.release()
        elif self._ready is not None:
            self._ready.set()
