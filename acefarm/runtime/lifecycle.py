"""One long job, from its Kafka record to its final event: the lifecycle every worker shares.

A worker supplies only what its job does (`JobWorker`); `JobRunner.handle` does the rest: parse the
request (malformed → dead letter), bind `task_id` to every log line, republish a stored outcome,
catch up on cancels (skip a cancelled job), mint an attempt id, publish `TaskStarted`, throttle
progress, run the work, map exceptions to the final event, publish it (awaited) and settle.
Around all of it: the job's deadline (`watchdog`), its attempts recorded in storage before it starts
(`attempts`), and the refusals at pickup: `poison` after `MAX_ATTEMPTS` crashed or hung attempts,
`expired` for a job never started within `JOB_QUEUE_TTL_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Hashable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, get_args

from aiokafka import AIOKafkaProducer, ConsumerRecord
from annotated_types import MaxLen
from structlog.contextvars import bound_contextvars

from acefarm.infra.kafka import publish
from acefarm.infra.logging import get_logger
from acefarm.infra.settings import Settings
from acefarm.infra.storage import Storage
from acefarm.runtime.attempts import AttemptRecord, Ending, mark_ended, read_attempts, write_attempts
from acefarm.runtime.batch import BatchCall, Seat, SharedCompute
from acefarm.runtime.cancels import CancelWatcher
from acefarm.runtime.events import JobEvents, parse_request
from acefarm.runtime.group_loop import run_in_daemon_thread
from acefarm.runtime.job_metrics import observe_outcome
from acefarm.runtime.pipeline import Claim, ComputeSlot
from acefarm.runtime.portal import BlockingStorage, ThreadPortal
from acefarm.runtime.progress import Eta, ProgressPublisher, Report, no_eta
from acefarm.runtime.stage_clock import StageClock
from acefarm.runtime.watchdog import DeadlinePassed, job_deadline_s, within_deadline
from schemas.events import (
    MAX_ATTEMPT_NUMBER,
    Envelope,
    TaskCancelled,
    TaskFailed,
    TaskStarted,
    TaskSucceeded,
    utcnow,
    validate_record,
)

log = get_logger(__name__)

R = TypeVar("R", bound=Envelope)
T = TypeVar("T")

FinalEvent = TaskSucceeded | TaskFailed | TaskCancelled


@dataclass(frozen=True)
class Forward:
    """A job whose stage ends by handing the task to the next stage (the planner → the DiT): `event`
    is published on `topic` (awaited, acks=all) instead of a final event, then the offset is committed.
    The next stage publishes the task's final event."""

    topic: str
    event: Envelope

    @property
    def type(self) -> str:
        """What the logs call this outcome."""
        return f"forwarded:{getattr(self.event, 'type', 'event')}"


Outcome = FinalEvent | Forward
"""How a job ends for its worker: a final event, or a forward to the next stage."""

ERROR_MAX_CHARS: int = next(m.max_length for m in TaskFailed.model_fields["error"].metadata if isinstance(m, MaxLen))
"""Longest `TaskFailed.error` the contract accepts; longer texts are cut."""
FAILURE_REASONS: frozenset[str] = frozenset(get_args(TaskFailed.model_fields["reason"].annotation))
"""The `TaskFailed.reason` values the contract accepts."""
SKIPPED_REASON = "cancelled before it started"
RUNNING_REASON = "cancelled while running"


@dataclass(frozen=True)
class WorkerClients:
    """What a job publishes, stores and checks with; started and stopped by `serve_jobs`."""

    settings: Settings
    worker: str
    storage: Storage
    producer: AIOKafkaProducer
    cancels: CancelWatcher


@dataclass(frozen=True)
class Failed:
    """A worker's exception means `TaskFailed` with this reason (one of `FAILURE_REASONS`) and text."""

    reason: str
    error: str


@dataclass(frozen=True)
class Cancelled:
    """A worker's exception means the job was cancelled while running."""

    reason: str = RUNNING_REASON


@dataclass(frozen=True)
class Interrupted:
    """A worker's exception means the job stopped early on shutdown: no final event, offset left uncommitted."""


Verdict = Failed | Cancelled | Interrupted

PARSED_KEPT = 1024
"""Requests parsed for their batch key kept at most for their jobs (the oldest are parsed again if needed)."""
NOTE_S = 10.0
"""Bound on each bookkeeping step that must not hold a job up (attempt notes, cleanup after a timeout)."""


class JobContext:
    """What a running job may use: its ids, settings, storage (on the loop and from a worker thread),
    progress reports, and whether it was cancelled or should stop early."""

    def __init__(
        self,
        *,
        task_id: str,
        attempt: str,
        clients: WorkerClients,
        progress: ProgressPublisher | None,
        stop: threading.Event,
        slot: Claim | None = None,
        seat: Seat | None = None,
    ) -> None:
        self.task_id = task_id
        self.attempt = attempt
        self.settings = clients.settings
        self.storage = clients.storage
        """Storage for code on the event loop (await it)."""
        self.portal = ThreadPortal()
        """The way from a worker thread to the event loop; closed when the job is over."""
        self.blocking_storage = BlockingStorage(clients.storage, self.portal)
        """Storage for code in a worker thread (blocking calls through `portal`)."""
        self._cancels = clients.cancels
        self._progress = progress
        self._stop = stop
        self._abandoned = threading.Event()
        self._slot = slot
        self._seat = seat
        self.retried = False
        """This attempt follows an earlier one of the same job (it then never shares an engine call)."""
        self.prepared: Any = None
        """What the worker's `prepare` returned (None without one)."""
        self.stages = StageClock(observe=True)
        """The job's stage clock (`acefarm_stage_seconds`; a worker may also report its timings): started anew
        when the job runs; each progress report enters its stage."""

    @contextlib.asynccontextmanager
    async def compute(self) -> AsyncIterator[None]:
        """Mark the engine call: on entry the next job may be fetched and prepared; on exit the engine
        goes to the next job while this one encodes, uploads and publishes."""
        if self._slot is not None:
            self._slot.computing()
        try:
            yield
        finally:
            if self._slot is not None:
                self._slot.release()

    async def compute_shared(self, item: Any, call: BatchCall, name: str = "engine") -> Any:
        """The job's engine call, shared with the other members of its batch (docs/consumer.md, "Batching"):
        `call` (blocking, in a worker thread) gets the inputs of every member and returns one result per input;
        this job's result is returned. Alone (no batch), `call([item])` inside `compute()`."""
        if self._seat is None:
            async with self.compute():
                return (await self.in_thread(lambda: call([item]), name))[0]
        return await self._seat.compute(item, call, alone=self.retried)

    def report(self, report: Report) -> None:
        """Report progress; thread-safe (coalesced and throttled to `PROGRESS_MAX_HZ`; dropped before the start)."""
        if self._progress is not None:
            self._progress.report(report)

    def report_now(self, report: Report) -> None:
        """Report progress from the event loop (dropped before the start)."""
        if self._progress is not None:
            self._progress.report_now(report)

    def is_cancelled(self) -> bool:
        """Whether the job was cancelled by a user or abandoned on shutdown; thread-safe."""
        return self._abandoned.is_set() or self._cancels.is_cancelled(self.task_id)

    def stop_requested(self) -> bool:
        """Whether shutdown asks the job to stop early (checkpoint, then raise an `Interrupted` error)."""
        return self._stop.is_set()

    async def in_thread(self, fn: Callable[[], T], name: str) -> T:
        """Run blocking `fn` in a daemon thread (logging context carried over) and await its result."""
        return await run_in_daemon_thread(fn, name=f"{name}-{self.task_id}")

    def succeeded(self, **fields: Any) -> TaskSucceeded:
        """The job's `TaskSucceeded` with these extra fields (files, lora_id, loss)."""
        return TaskSucceeded(task_id=self.task_id, attempt=self.attempt, **fields)

    def abandon(self) -> None:
        """Shutdown gave up on the job: `is_cancelled` turns true and thread calls to the loop stop."""
        self._abandoned.set()
        self.portal.close()


@dataclass
class _Job:
    """What the watchdog needs to know about the job it guards."""

    deadline_at: float
    attempt: str | None = None
    ctx: JobContext | None = None
    progress: ProgressPublisher | None = None
    final_sent: bool = False
    history: AttemptRecord | None = None
    """The attempts read at pickup, then the record stored at the start (None: storage could not say)."""


class JobWorker(Protocol[R]):
    """The job-specific part of a worker; subclass it to inherit the optional hooks' defaults."""

    request_type: type[R]
    """The request event this worker consumes; any other record is dead-lettered."""
    prepares_ahead: bool = False
    """The next job may be taken as soon as this one is prepared and waits for the engine (not only once it
    computes), so two are prepared behind the one computing; only for a worker whose `run` uses `ctx.compute()`
    (docs/consumer.md, "Overlap")."""

    async def run(self, request: R, ctx: JobContext) -> Outcome:
        """Do the job; return its final event (usually `ctx.succeeded(...)`) or a `Forward`; or raise (`classify`).

        Wrap the engine call in `async with ctx.compute():` so the next job is prepared meanwhile and
        takes the engine as soon as the call returns (without it, jobs do not overlap)."""
        ...

    async def prepare(self, request: R, ctx: JobContext) -> Any:
        """Fetch and decode the job's inputs before it starts (it may overlap the previous job's compute);
        the result is `ctx.prepared`. Runs before `TaskStarted`: no progress reports; may raise (`classify`)."""
        return None

    def classify(self, error: Exception) -> Verdict | None:
        """What an exception from `run` means; None: an unexpected error (`internal`, logged with traceback)."""
        return None

    def batch_key(self, request: R, settings: Settings) -> Hashable | None:
        """Requests with equal keys may run as one batch (`run` then uses `ctx.compute_shared`); None: never batched."""
        return None

    def progress_eta(self) -> Eta:
        """A fresh time-left estimator for one job's progress reports."""
        return no_eta

    def deadline_s(self, request: R, settings: Settings) -> float:
        """Seconds the job may take from pickup to its final event (`job_deadline_s` with the job's size)."""
        return job_deadline_s(settings)

    async def replay(self, request: R, storage: Storage) -> Outcome | None:
        """A stored outcome to republish instead of redoing the job (a redelivered finished job)."""
        return None

    async def on_final(self, final: FinalEvent, storage: Storage) -> None:
        """Called with the final event just before it is published (e.g. to store it)."""
        return None


class JobRunner(Generic[R]):
    """Runs a worker's jobs record by record; the handler that `group_loop` calls.

    `handle` returns True once the final event (or dead letter) is acknowledged, so the offset may be
    committed, and False when the job was interrupted by shutdown (left uncommitted). Job errors
    become final events; only a failure to publish (Kafka unreachable) escapes. A job that passes its
    deadline fails with reason `timeout` and sets `wedged`: the process must exit once the offset is
    committed, since whatever the job was stuck in may still hold a thread or the GPU.
    """

    def __init__(self, worker: JobWorker[R], clients: WorkerClients) -> None:
        self._worker = worker
        self._clients = clients
        self._events = JobEvents(clients.producer)
        self._stop = threading.Event()
        self._stage = str(worker.request_type.model_fields["type"].default).split(".", 1)[0]
        """The kind of job (generation, planning, training): each stage of a task counts its own attempts."""
        self.slot = ComputeSlot()
        """The engine, handed from one job to the next (`gaps`: how long it stood idle between queued jobs)."""
        self.wedged = False
        """A job passed its deadline: exit the process after committing (see `run_worker`)."""
        self._parsed: dict[tuple[str, int, int], R] = {}
        """Requests parsed for their `batch_key`, by (topic, partition, offset), until their job takes them."""

    async def handle(self, record: ConsumerRecord[bytes, bytes], ready: asyncio.Event | None = None) -> bool:
        """Process one record; True when its offset may be committed. `ready` is set once the next record
        may be taken: the job entered its compute phase (`JobContext.compute`) or is over (a `JobSignal` is also
        released once the engine call returned)."""
        claim = Claim(self.slot, ready, early=self._worker.prepares_ahead)
        try:
            return await self._handle(record, claim, None)
        finally:
            claim.release()

    def batch_key(self, record: ConsumerRecord[bytes, bytes]) -> Hashable | None:
        """The worker's `batch_key` for the record's request; None for a record that is not a valid request (its
        job dead-letters it). The parsed request is kept for the job (a record at an offset never changes)."""
        try:
            request = validate_record(record.topic, record.key, record.value)
            if not isinstance(request, self._worker.request_type):
                return None
            key = self._worker.batch_key(request, self._clients.settings)
        except Exception:
            return None
        while len(self._parsed) >= PARSED_KEPT:  # records fetched, then given back and never run here
            del self._parsed[next(iter(self._parsed))]
        self._parsed[(record.topic, record.partition, record.offset)] = request
        return key

    async def handle_group(
        self,
        records: Sequence[ConsumerRecord[bytes, bytes]],
        ready: asyncio.Event | None = None,
        scope: Callable[[ConsumerRecord[bytes, bytes]], AbstractContextManager[Any]] | None = None,
    ) -> bool:
        """Process a batch of records (equal `batch_key`s) as jobs sharing one engine call; True when every
        offset may be committed. Each member keeps its own lifecycle, inside `scope(record)` when given."""
        claim = Claim(self.slot, ready, early=self._worker.prepares_ahead)
        shared = SharedCompute(len(records), claim) if len(records) > 1 else None

        async def member(record: ConsumerRecord[bytes, bytes], seat: Seat | None) -> bool:
            try:
                with scope(record) if scope is not None else contextlib.nullcontext():
                    return await self._handle(record, claim, seat)
            finally:
                if seat is not None:
                    seat.leave()

        try:
            seats = [shared.seat() if shared is not None else None for _ in records]
            members = (member(record, seat) for record, seat in zip(records, seats, strict=True))
            results = await asyncio.gather(*members, return_exceptions=True)
        finally:
            claim.release()
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return all(results)

    async def _handle(self, record: ConsumerRecord[bytes, bytes], claim: Claim, seat: Seat | None) -> bool:
        request = self._parsed.pop((record.topic, record.partition, record.offset), None)
        if request is None:
            producer, worker = self._clients.producer, self._clients.worker
            request = await parse_request(producer, record, self._worker.request_type, worker)
        if request is None:
            return True
        with bound_contextvars(task_id=request.task_id):
            commit = await self._watched(request, record, claim, seat)
            await self._events.settle()
            return commit

    def on_shutdown(self) -> None:
        """Shutdown was requested while a job runs: `ctx.stop_requested()` turns true."""
        self._stop.set()

    async def _watched(
        self, request: R, record: ConsumerRecord[bytes, bytes], claim: Claim, seat: Seat | None = None
    ) -> bool:
        """The job's preparation, then (holding the engine) its run, each under the deadline; past it, the
        job fails `timeout` and the runner is `wedged`. Waiting for the engine is not counted."""
        seconds = self._worker.deadline_s(request, self._clients.settings)
        job = _Job(deadline_at=time.monotonic() + seconds)
        try:
            before = self._before_start(request, record, job, claim, seat)
            ctx = await within_deadline(before, seconds, name="job-prepare")
            if isinstance(ctx, bool):
                return ctx
            await claim.take()
            job.deadline_at = time.monotonic() + seconds
            return await within_deadline(self._started(request, record, job, ctx), seconds, name="job")
        except DeadlinePassed:
            await self._give_up(request, job, seconds)
            return True

    async def _before_start(
        self, request: R, record: ConsumerRecord[bytes, bytes], job: _Job, claim: Claim, seat: Seat | None
    ) -> JobContext | bool:
        """Everything before the job needs the engine: a stored outcome, cancels, refusals, the worker's
        `prepare`. Returns the job's context, or whether to commit when the job is already over."""
        task_id = request.task_id
        previous = await self._worker.replay(request, self._clients.storage)
        if previous is not None:
            log.info("job.outcome_republished", outcome=previous.type)
            await self._publish(previous)
            return True
        cancels = self._clients.cancels
        await cancels.catch_up()
        if cancels.is_cancelled(task_id):
            return await self._skip_cancelled(task_id, record)
        history = job.history = await self._read_history(task_id)
        refusal = self._refusal(request, history)
        if refusal is not None:
            await self._finish(refusal)
            log.warning("job.refused", reason=refusal.reason, error=refusal.error)
            return True
        attempt = job.attempt = uuid.uuid4().hex
        ctx = job.ctx = JobContext(
            task_id=task_id,
            attempt=attempt,
            clients=self._clients,
            progress=None,
            stop=self._stop,
            slot=claim,
            seat=seat,
        )
        try:
            ctx.prepared = await self._worker.prepare(request, ctx)
        except Exception as error:  # not started: the final event carries no attempt
            final = self._final_for(error, ctx)
            if final is None:
                return False
            await self._finish(final.model_copy(update={"attempt": None}))
            log.info("job.finished", outcome=final.type, seconds=0.0, error=getattr(final, "error", None))
            return True
        return ctx

    async def _skip_cancelled(self, task_id: str, record: ConsumerRecord[bytes, bytes]) -> bool:
        await self._finish(TaskCancelled(task_id=task_id, reason=SKIPPED_REASON))
        log.info("job.skipped_cancelled", offset=record.offset, partition=record.partition)
        return True

    async def _started(self, request: R, record: ConsumerRecord[bytes, bytes], job: _Job, ctx: JobContext) -> bool:
        """The job holds the engine: record the attempt and announce `TaskStarted` (both at once, both done before
        the work begins, so a job that kills its process at once is counted and still shows its attempt), run,
        publish the outcome."""
        task_id, attempt = request.task_id, ctx.attempt
        if self._clients.cancels.is_cancelled(task_id):  # cancelled while it was being prepared
            return await self._skip_cancelled(task_id, record)
        number = self._count_start(attempt, job)
        ctx.retried = number > 1
        worker = self._clients.worker
        started_event = TaskStarted(task_id=task_id, attempt=attempt, worker=worker, attempt_number=number)
        await asyncio.gather(self._record_start(task_id, job), self._events.announce(started_event))
        log.info(
            "job.started",
            attempt=attempt,
            attempt_number=number,
            offset=record.offset,
            partition=record.partition,
            queued_s=round(max(time.time() - record.timestamp / 1000, 0.0), 3),
        )
        started = time.monotonic()
        try:
            final = await self._run(request, job, ctx)
        except asyncio.CancelledError:
            if time.monotonic() < job.deadline_at:  # shutdown gave up on it (the watchdog notes its own)
                await self._note_ending(task_id, job, "interrupted")
            raise
        seconds = round(time.monotonic() - started, 3)
        observe_outcome(request, final, seconds)
        if final is None:
            log.info("job.interrupted", seconds=seconds)
            await self._note_ending(task_id, job, "interrupted")
            return False
        await self._finish(final)
        job.final_sent = True
        log.info("job.finished", outcome=final.type, seconds=seconds, error=getattr(final, "error", None))
        await self._note_ending(task_id, job, "forwarded" if isinstance(final, Forward) else final.type)
        return True

    def _refusal(self, request: R, history: AttemptRecord | None) -> TaskFailed | None:
        """`poison` when earlier attempts crashed or hung `MAX_ATTEMPTS` times; `expired` when the job was
        never started and is older than `JOB_QUEUE_TTL_S`; else None (unknown history: None)."""
        if history is None:
            return None
        settings = self._clients.settings
        if history.failures >= settings.max_attempts:
            error = (
                f"not retried: {history.failures} attempts crashed, hung or timed out their worker "
                f"(MAX_ATTEMPTS={settings.max_attempts})"
            )
            return TaskFailed(task_id=request.task_id, reason="poison", error=error)
        age_s = (utcnow() - request.occurred_at).total_seconds()
        if not history.attempts and age_s > settings.job_queue_ttl_s:
            error = f"not started within its queue lifetime of {settings.job_queue_ttl_s:g} s (queued {age_s:.0f} s)"
            return TaskFailed(task_id=request.task_id, reason="expired", error=error)
        return None

    async def _read_history(self, task_id: str) -> AttemptRecord | None:
        """The task's attempt record; None when storage cannot say (then nothing is refused)."""
        try:
            return await read_attempts(self._clients.storage, task_id, self._stage)
        except Exception as error:
            log.warning("attempts.read_failed", error=error_text(error))
            return None

    def _count_start(self, attempt: str, job: _Job) -> int:
        """Add the new attempt to `job.history` (kept for its ending); returns its number (1 for the first start,
        and when storage could not say)."""
        if job.history is None:
            return 1
        job.history = job.history.started(attempt, self._clients.worker)
        return min(len(job.history.attempts), MAX_ATTEMPT_NUMBER)

    async def _record_start(self, task_id: str, job: _Job) -> None:
        """Store `job.history` with the new attempt before the job starts; best effort (logged)."""
        if job.history is None:
            return
        try:
            await write_attempts(self._clients.storage, task_id, self._stage, job.history)
        except Exception as error:
            log.warning("attempts.write_failed", error=error_text(error))

    async def _note_ending(self, task_id: str, job: _Job, ending: Ending) -> None:
        """Best effort, bounded: record how the attempt ended (the record stored at the start is updated
        without reading it back; storage that could not say at pickup is read again)."""
        if job.attempt is None:
            return
        if job.history is not None:
            note = write_attempts(
                self._clients.storage, task_id, self._stage, job.history.ended_as(job.attempt, ending)
            )
        else:
            note = mark_ended(self._clients.storage, task_id, self._stage, job.attempt, ending)
        try:
            await within_deadline(note, NOTE_S, name="note")
        except Exception as error:
            log.warning("attempts.write_failed", error=error_text(error))

    async def _give_up(self, request: R, job: _Job, seconds: float) -> None:
        """The deadline passed: stop the job's thread calls, publish `timeout` (unless a final event went
        out already) and mark the runner `wedged`."""
        self.wedged = True
        if job.ctx is not None:
            job.ctx.abandon()
        if job.progress is not None:
            with contextlib.suppress(Exception):
                await within_deadline(job.progress.close(flush=False), NOTE_S, name="progress-close")
        log.error("job.deadline_passed", deadline_s=round(seconds, 3), attempt=job.attempt)
        if job.final_sent:
            return
        error = f"the job did not finish within its deadline of {seconds:g} s; its worker restarts"
        final = TaskFailed(task_id=request.task_id, attempt=job.attempt, reason="timeout", error=error)
        try:
            await within_deadline(self._worker.on_final(final, self._clients.storage), NOTE_S, name="on-final")
        except Exception as error_:
            log.warning("job.on_final_failed", error=error_text(error_))
        await self._events.publish(final)
        await self._note_ending(request.task_id, job, "timeout")

    async def _finish(self, final: Outcome) -> None:
        if not isinstance(final, Forward):
            await self._worker.on_final(final, self._clients.storage)
        await self._publish(final)

    async def _publish(self, outcome: Outcome) -> None:
        if isinstance(outcome, Forward):
            await publish(self._clients.producer, outcome.topic, outcome.event)
        else:
            await self._events.publish(outcome)

    async def _run(self, request: R, job: _Job, ctx: JobContext) -> Outcome | None:
        """The work, its exceptions mapped to the final event; None when interrupted by shutdown."""
        ctx.stages = StageClock(observe=True)
        progress = job.progress = ctx._progress = ProgressPublisher(
            task_id=request.task_id,
            attempt=ctx.attempt,
            publish=self._events.emit,
            max_hz=self._clients.settings.progress_max_hz,
            eta=self._worker.progress_eta(),
            stages=ctx.stages,
        )
        final: Outcome | None
        try:
            final = await self._worker.run(request, ctx)
        except asyncio.CancelledError:
            ctx.abandon()  # shutdown or the watchdog gave up on this job: stop the work, publish nothing more
            await progress.close(flush=False)
            raise
        except Exception as error:
            final = self._final_for(error, ctx)
        finally:
            ctx.portal.close()
        # A final event supersedes any unsent report; an interrupted job sends its last one.
        await progress.close(flush=final is None)
        return final

    def _final_for(self, error: Exception, ctx: JobContext) -> FinalEvent | None:
        verdict = self._worker.classify(error)
        if isinstance(verdict, Interrupted):
            return None
        if isinstance(verdict, Cancelled):
            return TaskCancelled(task_id=ctx.task_id, attempt=ctx.attempt, reason=verdict.reason)
        if verdict is None or verdict.reason not in FAILURE_REASONS:
            log.exception("job.unexpected_error")
            reason, text = "internal", error_text(error)
        else:
            log.warning("job.failed", reason=verdict.reason, error=verdict.error)
            reason, text = verdict.reason, verdict.error
        fields = {"task_id": ctx.task_id, "attempt": ctx.attempt, "reason": reason, "error": text[:ERROR_MAX_CHARS]}
        return TaskFailed.model_validate(fields)


def error_text(error: BaseException) -> str:
    """`Type: message` (or just the type when there is no message), cut to `ERROR_MAX_CHARS`."""
    message = str(error).strip()
    return f"{type(error).__name__}: {message}"[:ERROR_MAX_CHARS] if message else type(error).__name__
