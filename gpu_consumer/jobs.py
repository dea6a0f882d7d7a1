"""One generation job, from a raw Kafka record to its final lifecycle event."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

from aiokafka import AIOKafkaProducer, ConsumerRecord
from pydantic import ValidationError
from structlog.contextvars import bound_contextvars

from acefarm.kafka import dead_letter, publish, send
from acefarm.logging import get_logger
from acefarm.settings import Settings
from acefarm.storage import Storage
from gpu_consumer.audio_io import load_inputs, store_takes
from gpu_consumer.cancellations import CancelWatcher
from gpu_consumer.engine.base import Engine, EngineError, Job, JobCancelled
from gpu_consumer.progress import ProgressPublisher
from gpu_consumer.threads import run_in_daemon_thread
from schemas import topics
from schemas.events import (
    Envelope,
    GenerationRequested,
    TaskCancelled,
    TaskFailed,
    TaskStarted,
    TaskSucceeded,
    parse_event,
)
from schemas.status import Stage

log = get_logger(__name__)

FinalEvent = TaskSucceeded | TaskFailed | TaskCancelled


class JobHandler:
    """Validates a request record, runs it on the engine, stores the takes and publishes the events.

    `handle` returns once the final event (or the dead letter) is acknowledged by the broker, so the
    caller may then commit the offset. Job errors become `TaskFailed`; only a failure to publish
    (Kafka unreachable) escapes, so the offset is never committed for an unreported job.
    """

    def __init__(
        self,
        *,
        engine: Engine,
        storage: Storage,
        producer: AIOKafkaProducer,
        cancels: CancelWatcher,
        settings: Settings,
        worker: str,
    ) -> None:
        self._engine = engine
        self._storage = storage
        self._producer = producer
        self._cancels = cancels
        self._settings = settings
        self._worker = worker
        self._unacked: list[asyncio.Future[object]] = []

    async def handle(self, record: ConsumerRecord[bytes, bytes]) -> FinalEvent | None:
        """Process one record; returns the final event published, or None if it was dead-lettered."""
        try:
            event = parse_event(record.value or b"")
        except ValidationError as error:
            await dead_letter(self._producer, record, _validation_message(error), self._worker)
            return None
        if not isinstance(event, GenerationRequested):
            error_text = f"expected a generation.requested event, got {event.type}"
            await dead_letter(self._producer, record, error_text, self._worker)
            return None
        with bound_contextvars(task_id=event.task_id):
            self._unacked.clear()
            final = await self._handle_request(event, record)
            await self._settle_unacked()
            return final

    async def _handle_request(self, event: GenerationRequested, record: ConsumerRecord[bytes, bytes]) -> FinalEvent:
        task_id = event.task_id
        await self._cancels.catch_up()
        if self._cancels.is_cancelled(task_id):
            skipped = TaskCancelled(task_id=task_id, reason="cancelled before it started")
            await self._publish(skipped)
            log.info("job.skipped_cancelled", offset=record.offset, partition=record.partition)
            return skipped
        attempt = uuid.uuid4().hex
        await self._emit(TaskStarted(task_id=task_id, attempt=attempt, worker=self._worker))
        log.info(
            "job.started",
            attempt=attempt,
            offset=record.offset,
            partition=record.partition,
            queued_s=round(max(time.time() - record.timestamp / 1000, 0.0), 3),
        )
        started = time.monotonic()
        final = await self._run(event, attempt)
        await self._publish(final)
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
            publish=self._emit,
            max_hz=self._settings.progress_max_hz,
        )

        def is_cancelled() -> bool:
            return abandon.is_set() or self._cancels.is_cancelled(task_id)

        try:
            if params.src_audio_key or params.reference_audio_key:
                progress.report_now(Stage.LOADING, 0.0)
            src, ref = await load_inputs(self._storage, params, self._settings)
            job = Job(
                task_id=task_id,
                params=params,
                src_audio=src,
                reference_audio=ref,
                report=progress.report,
                is_cancelled=is_cancelled,
            )
            takes = await run_in_daemon_thread(lambda: self._engine.generate(job), name=f"engine-{task_id}")
            if is_cancelled():
                raise JobCancelled
            progress.report_now(Stage.UPLOADING, 1.0)
            files = await store_takes(self._storage, task_id, takes, params.audio_format)
            await progress.close()
            return TaskSucceeded(task_id=task_id, attempt=attempt, files=files)
        except JobCancelled:
            await progress.close()
            return TaskCancelled(task_id=task_id, attempt=attempt, reason="cancelled while running")
        except EngineError as error:
            await progress.close()
            log.warning("job.engine_error", reason=error.reason, error=str(error))
            return TaskFailed(task_id=task_id, attempt=attempt, reason=_reason(error), error=_text(error))
        except asyncio.CancelledError:
            abandon.set()  # shutdown gave up on this job: stop the engine, publish nothing more
            await progress.close(flush=False)
            raise
        except Exception as error:
            await progress.close()
            log.exception("job.unexpected_error")
            return TaskFailed(task_id=task_id, attempt=attempt, reason="internal", error=_text(error))

    async def _publish(self, event: Envelope) -> None:
        """Publish a final event and wait for the broker's acknowledgement."""
        await publish(self._producer, topics.TASK_EVENTS, event)

    async def _emit(self, event: Envelope) -> None:
        """Enqueue a non-final event (started, progress) without waiting for its acknowledgement.

        Waiting for each would cost a broker round trip per event. It is not needed: every event of
        a task has the task id as key, so they share one partition, and the producer writes one
        partition in send order (one request in flight per partition, retries at the head of the
        queue). The final event is sent after these and awaited, and the offset is committed only
        after that ack, so by then each earlier event is settled too (`_settle_unacked`). A lost
        non-final event only hides an intermediate state; the final one carries the outcome.
        """
        self._unacked.append(await send(self._producer, topics.TASK_EVENTS, event))

    async def _settle_unacked(self) -> None:
        """Log non-final events that failed; called after the final ack, when all have settled."""
        results = await asyncio.gather(*self._unacked, return_exceptions=True)
        self._unacked.clear()
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            log.warning("job.event_not_delivered", count=len(failed), error=repr(failed[0]))


def _reason(error: EngineError) -> str:
    known = {"invalid_input", "out_of_memory", "unsupported", "engine_error", "timeout", "internal"}
    return error.reason if error.reason in known else "engine_error"


def _text(error: BaseException) -> str:
    message = str(error).strip()
    if isinstance(error, EngineError) and message:
        return message[:4000]
    return f"{type(error).__name__}: {message}"[:4000] if message else type(error).__name__


def _validation_message(error: ValidationError) -> str:
    parts = [f"{'.'.join(str(p) for p in e['loc']) or 'event'}: {e['msg']}" for e in error.errors()[:10]]
    return "invalid event: " + "; ".join(parts)
