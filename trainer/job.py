"""One training job, from a raw Kafka record to exactly one final lifecycle event.

Durability: checkpoints go to `checkpoints/{task_id}/state.pt`; a redelivered job (after a crash)
resumes from it. The final event is stored (`outcome.json`) before it is published, so a job
redelivered after its final event went out republishes that same event (same event id) instead of
training again. The adapter files are uploaded before `manifest.json`, which marks the LoRA finished (`store_lora`).
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, NamedTuple

import torch
from aiokafka import ConsumerRecord
from pydantic import ValidationError
from structlog.contextvars import bound_contextvars

from acefarm.infra.logging import get_logger
from acefarm.model.datasets import DatasetError, DatasetLimits
from acefarm.model.loras import checkpoint_prefix
from acefarm.runtime.events import JobEvents, parse_request
from acefarm.runtime.group_loop import run_in_daemon_thread
from acefarm.runtime.progress import ProgressPublisher, Report, StepRateEta
from acefarm.runtime.service import WorkerClients
from schemas.events import TaskCancelled, TaskFailed, TaskStarted, TaskSucceeded, TrainingRequested, parse_lifecycle
from schemas.status import Stage
from trainer.lora_training import Checkpoint, TrainingCancelled, TrainingHooks, TrainingInterrupted
from trainer.results import store_lora
from trainer.run import ENCODING_SHARE, run_training

log = get_logger(__name__)

FinalEvent = TaskSucceeded | TaskFailed | TaskCancelled


def checkpoint_key(task_id: str) -> str:
    """Storage key of a job's latest checkpoint."""
    return f"{checkpoint_prefix(task_id)}state.pt"


def outcome_key(task_id: str) -> str:
    """Storage key of a job's final event, kept so a redelivery republishes it instead of retraining."""
    return f"{checkpoint_prefix(task_id)}outcome.json"


class TrainingModel(NamedTuple):
    """The pipeline loaded once per process, its device, and the base model id and revision."""

    pipe: Any
    device: torch.device
    base_model: str
    base_revision: str | None


class TrainingJobHandler:
    """Validates a training record, trains, stores the adapter and manifest, publishes the events.

    `handle` returns True once the final event (or dead letter) is acknowledged, and False when the
    job was interrupted by shutdown after checkpointing (the offset must stay uncommitted).
    """

    def __init__(self, model: TrainingModel, clients: WorkerClients) -> None:
        self._model = model
        self._storage = clients.storage
        self._producer = clients.producer
        self._cancels = clients.cancels
        self._settings = clients.settings
        self._worker = clients.worker
        self._limits = DatasetLimits.from_settings(clients.settings)
        self._events = JobEvents(clients.producer)
        self._stop_requested = threading.Event()  # the running job checkpoints at its next step and stops

    async def handle(self, record: ConsumerRecord[bytes, bytes]) -> bool:
        """Process one record; True when its offset may be committed."""
        event = await parse_request(self._producer, record, TrainingRequested, self._worker)
        if event is None:
            return True
        with bound_contextvars(task_id=event.task_id):
            commit = await self._handle_request(event)
            await self._events.settle()
            return commit

    def on_shutdown(self) -> None:
        """Shutdown was requested: the running job checkpoints at its next step and stops."""
        self._stop_requested.set()

    async def _handle_request(self, event: TrainingRequested) -> bool:
        task_id = event.task_id
        previous = await self._stored_outcome(task_id)
        if previous is not None:
            log.info("training.outcome_republished", outcome=previous.type)
            await self._events.publish(previous)
            return True
        await self._cancels.catch_up()
        if self._cancels.is_cancelled(task_id):
            await self._finish(TaskCancelled(task_id=task_id, reason="cancelled before it started"))
            return True
        attempt = uuid.uuid4().hex
        await self._events.emit(TaskStarted(task_id=task_id, attempt=attempt, worker=self._worker))
        started = time.monotonic()
        final = await self._train(event, attempt)
        if final is None:
            log.info("training.interrupted", seconds=round(time.monotonic() - started, 1))
            return False
        await self._finish(final)
        log.info("training.finished", outcome=final.type, seconds=round(time.monotonic() - started, 1))
        return True

    async def _train(self, event: TrainingRequested, attempt: str) -> FinalEvent | None:
        task_id = event.task_id
        progress = ProgressPublisher(
            task_id=task_id,
            attempt=attempt,
            publish=self._events.emit,
            max_hz=self._settings.progress_max_hz,
            eta=StepRateEta(Stage.TRAINING),
        )
        abandon = threading.Event()
        loop = asyncio.get_running_loop()

        def save_checkpoint(checkpoint: Checkpoint) -> None:
            progress.report(
                Report(Stage.CHECKPOINTING, _share(checkpoint.step, event), checkpoint.step, event.options.steps)
            )
            data = checkpoint.to_bytes()
            future = asyncio.run_coroutine_threadsafe(
                self._storage.put_bytes(checkpoint_key(task_id), data, "application/octet-stream"), loop
            )
            future.result()
            log.info("training.checkpoint_saved", step=checkpoint.step, bytes=len(data))

        hooks = TrainingHooks(
            report=lambda step, total, loss: progress.report(
                Report(Stage.TRAINING, _share(step, event), step, total, loss, f"training step {step}/{total}")
            ),
            save_checkpoint=save_checkpoint,
            is_cancelled=lambda: abandon.is_set() or self._cancels.is_cancelled(task_id),
            should_stop=self._stop_requested.is_set,
        )
        try:
            with tempfile.TemporaryDirectory(prefix=f"acefarm-train-{task_id}-") as tmp:
                work = Path(tmp)
                zip_path = work / "dataset.zip"
                try:
                    await self._storage.download_file(event.dataset_key, zip_path)
                except FileNotFoundError:
                    await progress.close()
                    return TaskFailed(
                        task_id=task_id,
                        attempt=attempt,
                        reason="invalid_input",
                        error=f"the dataset {event.dataset_key!r} is not in storage",
                    )
                resume = await self._load_checkpoint(task_id)
                output = await run_in_daemon_thread(
                    lambda: run_training(
                        self._model.pipe,
                        self._model.device,
                        event,
                        zip_path,
                        work,
                        limits=self._limits,
                        hooks=hooks,
                        report=progress.report,
                        resume=resume,
                    ),
                    name=f"train-{task_id}",
                )
                progress.report(Report(Stage.UPLOADING, 1.0, message="storing the adapter"))
                await store_lora(
                    self._storage,
                    event,
                    output,
                    base_model=self._model.base_model,
                    base_revision=self._model.base_revision,
                )
            await progress.close()
            return TaskSucceeded(task_id=task_id, attempt=attempt, lora_id=event.lora_id, loss=output.result.final_loss)
        except TrainingInterrupted:
            await progress.close()
            return None
        except TrainingCancelled:
            await progress.close()
            return TaskCancelled(task_id=task_id, attempt=attempt, reason="cancelled while training")
        except DatasetError as error:
            await progress.close()
            return TaskFailed(task_id=task_id, attempt=attempt, reason="invalid_input", error=str(error)[:4000])
        except torch.OutOfMemoryError as error:
            await progress.close()
            _empty_cuda_cache()
            return TaskFailed(
                task_id=task_id, attempt=attempt, reason="out_of_memory", error=f"out of memory: {error}"[:4000]
            )
        except asyncio.CancelledError:
            abandon.set()  # shutdown gave up on this job: stop training, publish nothing more
            await progress.close(flush=False)
            raise
        except Exception as error:
            await progress.close()
            log.exception("training.unexpected_error")
            return TaskFailed(
                task_id=task_id, attempt=attempt, reason="internal", error=f"{type(error).__name__}: {error}"[:4000]
            )

    async def _load_checkpoint(self, task_id: str) -> Checkpoint | None:
        try:
            data = await self._storage.get_bytes(checkpoint_key(task_id))
        except FileNotFoundError:
            return None
        try:
            return await asyncio.to_thread(Checkpoint.from_bytes, data)
        except Exception as error:  # a damaged checkpoint: start over rather than fail
            log.warning("training.checkpoint_unreadable", error=str(error)[:300])
            return None

    async def _stored_outcome(self, task_id: str) -> FinalEvent | None:
        try:
            raw = await self._storage.get_bytes(outcome_key(task_id))
        except FileNotFoundError:
            return None
        try:
            event = parse_lifecycle(raw)
        except ValidationError:
            return None
        return event if isinstance(event, TaskSucceeded | TaskFailed | TaskCancelled) else None

    async def _finish(self, final: FinalEvent) -> None:
        """Store the outcome, publish it, then drop the training state (the outcome stays)."""
        await self._storage.put_bytes(outcome_key(final.task_id), final.to_bytes(), "application/json")
        await self._events.publish(final)
        await self._storage.delete(checkpoint_key(final.task_id))


def _share(step: int, event: TrainingRequested) -> float:
    return ENCODING_SHARE + (1.0 - 2 * ENCODING_SHARE) * step / event.options.steps


def _empty_cuda_cache() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
