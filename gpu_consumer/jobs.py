"""One generation job, from a raw Kafka record to its final lifecycle event."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

from aiokafka import ConsumerRecord
from structlog.contextvars import bound_contextvars

from acefarm.infra.logging import get_logger
from acefarm.runtime.events import JobEvents, parse_request
from acefarm.runtime.group_loop import run_in_daemon_thread
from acefarm.runtime.progress import ProgressEta, ProgressPublisher, Report
from acefarm.runtime.service import WorkerClients
from gpu_consumer.audio_io import load_inputs, store_takes
from gpu_consumer.engine.base import Engine, EngineError, Job, JobCancelled
from schemas.events import GenerationRequested, TaskCancelled, TaskFailed, TaskStarted, TaskSucceeded
from schemas.status import Stage

log = get_logger(__name__)

FinalEvent = TaskSucceeded | TaskFailed | TaskCancelled


class JobHandler:
    """Validates a request record, runs it on the engine, stores the takes and publishes the events.

    `handle` returns once the final event (or the dead letter) is acknowledged by the broker, so the
    caller may then commit the offset. Job errors become `TaskFailed`; only a failure to publish
    (Kafka unreachable) escapes, so the offset is never committed for an unreported job.
    """

    def __init__(self, *, engine: Engine, clients: WorkerClients) -> None:
        self._engine = engine
        self._storage = clients.storage
        self._producer = clients.producer
        self._cancels = clients.cancels
        self._settings = clients.settings
        self._worker = clients.worker
        self._events = JobEvents(clients.producer)

    async def handle(self, record: ConsumerRecord[bytes, bytes]) -> bool:
        """Process one record; True (commit) once its final event or dead letter is acknowledged."""
        event = await parse_request(self._producer, record, GenerationRequested, self._worker)
        if event is None:
            return True
        with bound_contextvars(task_id=event.task_id):
            await self._handle_request(event, record)
            await self._events.settle()
        return True

    def on_shutdown(self) -> None:
        """Nothing to stop early: the running job gets the grace period to finish."""

    async def _handle_request(self, event: GenerationRequested, record: ConsumerRecord[bytes, bytes]) -> FinalEvent:
        task_id = event.task_id
        await self._cancels.catch_up()
        if self._cancels.is_cancelled(task_id):
            skipped = TaskCancelled(task_id=task_id, reason="cancelled before it started")
            await self._events.publish(skipped)
            log.info("job.skipped_cancelled", offset=record.offset, partition=record.partition)
            return skipped
        attempt = uuid.uuid4().hex
        await self._events.emit(TaskStarted(task_id=task_id, attempt=attempt, worker=self._worker))
        log.info(
            "job.started",
            attempt=attempt,
            offset=record.offset,
            partition=record.partition,
            queued_s=round(max(time.time() - record.timestamp / 1000, 0.0), 3),
        )
        started = time.monotonic()
        final = await self._run(event, attempt)
        await self._events.publish(final)
        log.info(
            "job.finished",
            outcome=final.type,
            seconds=round(time.monotonic() - started, 3),
            error=getattr(final, "error", None),
        )
        return final

    async def _run(self, event: GenerationRequested, attempt: str) -> FinalEvent:
        task_id, params = event.task_id, event.params
        abandon = threading.Event()
        progress = ProgressPublisher(
            task_id=task_id,
            attempt=attempt,
            publish=self._events.emit,
            max_hz=self._settings.progress_max_hz,
            eta=ProgressEta(Stage.DIFFUSION),
        )

        def report(stage: Stage, share: float, step: int | None = None, total: int | None = None) -> None:
            progress.report(_report(stage, share, step, total))

        def is_cancelled() -> bool:
            return abandon.is_set() or self._cancels.is_cancelled(task_id)

        try:
            if params.src_audio_key or params.reference_audio_key:
                progress.report_now(_report(Stage.LOADING, 0.0))
            src, ref = await load_inputs(self._storage, params, self._settings)
            job = Job(
                task_id=task_id,
                params=params,
                src_audio=src,
                reference_audio=ref,
                report=report,
                is_cancelled=is_cancelled,
            )
            takes = await run_in_daemon_thread(lambda: self._engine.generate(job), name=f"engine-{task_id}")
            if is_cancelled():
                raise JobCancelled
            progress.report_now(_report(Stage.UPLOADING, 1.0))
            files = await store_takes(self._storage, task_id, takes, params.audio_format)
            await progress.close(flush=False)  # the final event supersedes any unsent report
            return TaskSucceeded(task_id=task_id, attempt=attempt, files=files)
        except JobCancelled:
            await progress.close(flush=False)
            return TaskCancelled(task_id=task_id, attempt=attempt, reason="cancelled while running")
        except EngineError as error:
            await progress.close(flush=False)
            log.warning("job.engine_error", reason=error.reason, error=str(error))
            return TaskFailed(task_id=task_id, attempt=attempt, reason=_reason(error), error=_text(error))
        except asyncio.CancelledError:
            abandon.set()  # shutdown gave up on this job: stop the engine, publish nothing more
            await progress.close(flush=False)
            raise
        except Exception as error:
            await progress.close(flush=False)
            log.exception("job.unexpected_error")
            return TaskFailed(task_id=task_id, attempt=attempt, reason="internal", error=_text(error))


def _report(stage: Stage, share: float, step: int | None = None, total: int | None = None) -> Report:
    message = f"{stage.value} step {step}/{total}" if step is not None and total else stage.value
    return Report(stage, share, step, total, message=message)


def _reason(error: EngineError) -> str:
    known = {"invalid_input", "out_of_memory", "unsupported", "engine_error", "timeout", "internal"}
    return error.reason if error.reason in known else "engine_error"


def _text(error: BaseException) -> str:
    message = str(error).strip()
    if isinstance(error, EngineError) and message:
        return message[:4000]
    return f"{type(error).__name__}: {message}"[:4000] if message else type(error).__name__
