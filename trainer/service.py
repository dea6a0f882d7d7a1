"""The trainer process: pipeline loaded once, one training job at a time from the `lora-trainers` group."""

from __future__ import annotations

import asyncio
import time

import torch

from acefarm.infra.logging import configure_logging, get_logger
from acefarm.infra.settings import Settings
from acefarm.runtime.group_loop import Shutdown
from acefarm.runtime.service import serve_jobs
from schemas import topics
from trainer.job import TrainingJobHandler, TrainingModel

log = get_logger(__name__)

DEFAULT_GRACE_S = 60.0
"""Seconds a running job gets after SIGTERM to checkpoint and stop before it is abandoned."""


def run_trainer(settings: Settings, *, grace_s: float = DEFAULT_GRACE_S) -> None:
    """Run the trainer until SIGTERM/SIGINT (blocking); the `acefarm trainer` command."""
    configure_logging("trainer", settings.log_level, settings.log_format)
    asyncio.run(serve(settings, grace_s=grace_s))


def load_training_pipeline(settings: Settings) -> TrainingModel:
    """The pipeline (from `MODEL_PATH` / `MODEL_ID`), its device, and the base model id and revision."""
    from acefarm.model.pipeline import load_pipeline

    started = time.monotonic()
    pipe, info = load_pipeline(settings)
    log.info(
        "trainer.pipeline_loaded", seconds=round(time.monotonic() - started, 2), device=info.device, dtype=info.dtype
    )
    return TrainingModel(pipe, torch.device(info.device), info.source, info.revision)


async def serve(settings: Settings, *, grace_s: float = DEFAULT_GRACE_S, shutdown: Shutdown | None = None) -> None:
    """Load the pipeline, join the trainers' group and train until shutdown is requested."""
    await serve_jobs(
        settings,
        name="trainer",
        topic=topics.TRAINING_REQUESTS,
        group_id=topics.TRAINERS_GROUP,
        load=lambda: load_training_pipeline(settings),
        make_handler=TrainingJobHandler,
        grace_s=grace_s,
        shutdown=shutdown,
    )
