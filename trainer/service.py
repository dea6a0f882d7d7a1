"""The trainer process: pipeline loaded once, one training job at a time from the `lora-trainers` group."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from typing import Any

import torch
from aiokafka import AIOKafkaConsumer

from acefarm.cancels import CancelWatcher
from acefarm.kafka import ensure_topics, make_consumer, make_producer
from acefarm.logging import configure_logging, get_logger
from acefarm.longjobs import PausingListener, Shutdown, consume_one_at_a_time
from acefarm.settings import Settings
from acefarm.storage import open_storage
from schemas import topics
from trainer.job import TrainingJobHandler

log = get_logger(__name__)

DEFAULT_GRACE_S = 60.0
"""Seconds a running job gets after SIGTERM to checkpoint and stop before it is abandoned."""


def run_trainer(settings: Settings, *, grace_s: float = DEFAULT_GRACE_S) -> None:
    """Run the trainer until SIGTERM/SIGINT (blocking); the `acefarm trainer` command."""
    configure_logging("trainer", settings.log_level, settings.log_format)
    asyncio.run(serve(settings, grace_s=grace_s))


def worker_name(settings: Settings) -> str:
    """`WORKER_ID` when set, else `host:pid`, with the device when one was chosen."""
    base = settings.worker_id or f"{socket.gethostname()}:{os.getpid()}"
    return f"{base}/{settings.device}" if settings.device and settings.device != "auto" else base


def load_training_pipeline(settings: Settings) -> tuple[Any, torch.device, str, str | None]:
    """The pipeline (from `MODEL_PATH` / `MODEL_ID`), its device, and the base model id and revision."""
    from acefarm.pipeline import load_pipeline

    started = time.monotonic()
    pipe, info = load_pipeline(settings)
    log.info(
        "trainer.pipeline_loaded", seconds=round(time.monotonic() - started, 2), device=info.device, dtype=info.dtype
    )
    return pipe, torch.device(info.device), info.source, info.revision


async def serve(settings: Settings, *, grace_s: float = DEFAULT_GRACE_S, shutdown: Shutdown | None = None) -> None:
    """Load the pipeline, join the trainers' group and train until shutdown is requested."""
    shutdown = shutdown or Shutdown()
    shutdown.install()
    worker = worker_name(settings)
    pipe, device, base_model, base_revision = await asyncio.to_thread(load_training_pipeline, settings)
    if shutdown.requested.is_set():
        return
    await ensure_topics(settings)
    storage = open_storage(settings)
    producer = make_producer(settings)
    cancels = CancelWatcher(settings)
    consumer = _make_group_consumer(settings)
    listener = PausingListener(consumer)
    consumer.subscribe([topics.TRAINING_REQUESTS], listener=listener)
    await producer.start()
    try:
        await cancels.start()
        await consumer.start()
        handler = TrainingJobHandler(
            pipe=pipe,
            device=device,
            base_model=base_model,
            base_revision=base_revision,
            storage=storage,
            producer=producer,
            cancels=cancels,
            settings=settings,
            worker=worker,
        )
        log.info("trainer.ready", worker=worker, group=topics.TRAINERS_GROUP)
        await consume_one_at_a_time(
            consumer, listener, handler.handle, shutdown, grace_s=grace_s, on_shutdown=handler.stop_requested.set
        )
    finally:
        for close in (consumer.stop, cancels.stop, producer.stop, storage.close):
            with contextlib.suppress(Exception):
                await close()
        log.info("trainer.stopped", worker=worker)


def _make_group_consumer(settings: Settings) -> AIOKafkaConsumer:
    # Polling goes on while training runs, so max_poll_interval only covers the gap between polls.
    return make_consumer(
        settings,
        group_id=topics.TRAINERS_GROUP,
        max_poll_records=1,
        max_poll_interval_ms=max(settings.kafka_session_timeout_ms, settings.kafka_rebalance_timeout_ms),
    )
