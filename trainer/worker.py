"""The trainer: the pipeline loaded once, LoRA training jobs from the `lora-trainers` group (`TRAINER`).

The runtime (`acefarm.runtime`) runs each job's lifecycle; this module says what a training job does.
Durability: checkpoints go to `checkpoints/{task_id}/state.pt` (written from the training thread
through the job's portal); a redelivered job (after a crash) resumes from it. The final event is
stored (`outcome.json`) before it is published, so a job redelivered after its final event went out
republishes that same event (same event id) instead of training again. The adapter files are
uploaded before `manifest.json`, which marks the LoRA finished (`store_lora`).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

import torch

from acefarm.infra.logging import get_logger
from acefarm.infra.settings import Settings
from acefarm.infra.storage import Storage
from acefarm.model.datasets import DatasetError, DatasetLimits
from acefarm.model.lm.audio_codes import NoAudioTokenizer
from acefarm.runtime.events import read_stored_event
from acefarm.runtime.lifecycle import Cancelled, Failed, FinalEvent, Interrupted, JobContext, JobWorker, Verdict
from acefarm.runtime.progress import Eta, Report, StepRateEta
from acefarm.runtime.service import WorkerKind
from acefarm.runtime.watchdog import job_deadline_s
from schemas import topics
from schemas.events import TaskCancelled, TaskFailed, TaskSucceeded, TrainingRequested
from schemas.status import Stage
from schemas.storage_keys import checkpoint_key, outcome_key
from trainer.lm_captions import CaptionLm, LmUnavailable
from trainer.lora_training import Checkpoint, TrainingCancelled, TrainingHooks, TrainingInterrupted
from trainer.results import store_lora
from trainer.run import ENCODING_SHARE, run_training

log = get_logger(__name__)


class TrainingModel(NamedTuple):
    """The pipeline loaded once per process, its device, the base model id and revision, and the captioning
    LM (`TRAINER_LM_CAPTIONS`; loaded on first need)."""

    pipe: Any
    device: torch.device
    base_model: str
    base_revision: str | None
    captions: CaptionLm | None = None


class TrainingWorker(JobWorker[TrainingRequested]):
    """Trains a LoRA from a `TrainingRequested`, stores the adapter and its manifest."""

    request_type = TrainingRequested

    def __init__(self, model: TrainingModel, settings: Settings) -> None:
        self._model = model
        self._limits = DatasetLimits.from_settings(settings)

    async def run(self, request: TrainingRequested, ctx: JobContext) -> FinalEvent:
        """Fetch the dataset, train in a worker thread (resuming from a checkpoint), store the adapter."""
        task_id, steps = request.task_id, request.options.steps

        def share(step: int) -> float:
            return ENCODING_SHARE + (1.0 - 2 * ENCODING_SHARE) * step / steps

        def save_checkpoint(checkpoint: Checkpoint) -> None:
            ctx.report(Report(Stage.CHECKPOINTING, share(checkpoint.step), checkpoint.step, steps))
            data = checkpoint.to_bytes()
            ctx.blocking_storage.put_bytes(checkpoint_key(task_id), data, "application/octet-stream")
            log.info("training.checkpoint_saved", step=checkpoint.step, bytes=len(data))

        hooks = TrainingHooks(
            report=lambda step, total, loss: ctx.report(
                Report(Stage.TRAINING, share(step), step, total, loss, f"training step {step}/{total}")
            ),
            save_checkpoint=save_checkpoint,
            is_cancelled=ctx.is_cancelled,
            should_stop=ctx.stop_requested,
        )
        with tempfile.TemporaryDirectory(prefix=f"acefarm-train-{task_id}-") as tmp:
            work = Path(tmp)
            zip_path = work / "dataset.zip"
            try:
                await ctx.storage.download_file(request.dataset_key, zip_path)
            except FileNotFoundError:
                raise DatasetError(None, f"the dataset {request.dataset_key!r} is not in storage") from None
            resume = await _load_checkpoint(ctx.storage, task_id)
            output = await ctx.in_thread(
                lambda: run_training(
                    self._model.pipe,
                    self._model.device,
                    request,
                    zip_path,
                    work,
                    limits=self._limits,
                    hooks=hooks,
                    report=ctx.report,
                    resume=resume,
                    captions=self._model.captions,
                ),
                name="train",
            )
            ctx.report_now(Report(Stage.UPLOADING, 1.0, message="storing the adapter"))
            model = self._model
            await store_lora(
                ctx.storage, request, output, base_model=model.base_model, base_revision=model.base_revision
            )
        return ctx.succeeded(lora_id=request.lora_id, loss=output.result.final_loss)

    def classify(self, error: Exception) -> Verdict | None:
        """Interrupted (checkpointed on shutdown), cancelled, unusable dataset, no captioning LM, or out of memory."""
        if isinstance(error, TrainingInterrupted):
            return Interrupted()
        if isinstance(error, TrainingCancelled):
            return Cancelled("cancelled while training")
        if isinstance(error, DatasetError):
            return Failed("invalid_input", str(error))
        if isinstance(error, LmUnavailable | NoAudioTokenizer):
            return Failed("unsupported", str(error))
        if isinstance(error, torch.OutOfMemoryError):
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            return Failed("out_of_memory", f"out of memory: {error}")
        return None

    def progress_eta(self) -> Eta:
        """Time left from the training steps' rate."""
        return StepRateEta(Stage.TRAINING)

    def deadline_s(self, request: TrainingRequested, settings: Settings) -> float:
        """The base deadline plus `TRAINING_DEADLINE_PER_STEP_S` per optimizer step."""
        return job_deadline_s(settings, request.options.steps, settings.training_deadline_per_step_s)

    async def replay(self, request: TrainingRequested, storage: Storage) -> FinalEvent | None:
        """The final event stored by an earlier attempt, if any."""
        event = await read_stored_event(storage, outcome_key(request.task_id))
        return event if isinstance(event, TaskSucceeded | TaskFailed | TaskCancelled) else None

    async def on_final(self, final: FinalEvent, storage: Storage) -> None:
        """Store the outcome (a redelivery republishes it), then drop the training state."""
        await storage.put_bytes(outcome_key(final.task_id), final.to_bytes(), "application/json")
        await storage.delete(checkpoint_key(final.task_id))


async def _load_checkpoint(storage: Storage, task_id: str) -> Checkpoint | None:
    try:
        data = await storage.get_bytes(checkpoint_key(task_id))
    except FileNotFoundError:
        return None
    try:
        return await asyncio.to_thread(Checkpoint.from_bytes, data)
    except Exception as error:  # a damaged checkpoint: start over rather than fail
        log.warning("training.checkpoint_unreadable", error=str(error)[:300])
        return None


def load_training_pipeline(settings: Settings) -> TrainingModel:
    """The pipeline (from `MODEL_PATH` / `MODEL_ID`), its device, the base model id and revision, and the
    captioning LM as `TRAINER_LM_CAPTIONS` says (not loaded yet)."""
    from acefarm.model.pipeline import load_pipeline

    started = time.monotonic()
    pipe, info = load_pipeline(settings)
    log.info(
        "trainer.pipeline_loaded", seconds=round(time.monotonic() - started, 2), device=info.device, dtype=info.dtype
    )
    captions = CaptionLm.configured(settings, info.device, pipe)
    return TrainingModel(pipe, torch.device(info.device), info.source, info.revision, captions)


TRAINER = WorkerKind(
    name="trainer",
    service="trainer",
    topic=topics.TRAINING_REQUESTS,
    group_id=topics.TRAINERS_GROUP,
    load=load_training_pipeline,
    make_job=TrainingWorker,
    grace_s=60.0,
)
"""`acefarm trainer`: one process per GPU, one training job at a time; after SIGTERM a running job
checkpoints at its next step and stops (docs/lora.md)."""
