"""A long-job worker process (GPU consumer, trainer): who it is, the clients it needs, its job loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from aiokafka import AIOKafkaProducer, ConsumerRecord

from acefarm.infra.kafka import ensure_topics, make_producer
from acefarm.infra.logging import get_logger
from acefarm.infra.settings import Settings
from acefarm.infra.storage import Storage, open_storage
from acefarm.runtime.cancels import CancelWatcher
from acefarm.runtime.group_loop import PausingListener, Shutdown, consume_one_at_a_time, make_job_consumer

log = get_logger(__name__)
M = TypeVar("M")


def worker_name(settings: Settings) -> str:
    """`WORKER_ID` when set, else `host:pid`; the device (or CUDA_VISIBLE_DEVICES) is appended when set.

    Shown in `TaskStarted.worker` and used as `group.instance.id` for static membership.
    """
    base = settings.worker_id or f"{socket.gethostname()}:{os.getpid()}"
    if settings.device and settings.device != "auto":
        return f"{base}/{settings.device}"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return f"{base}/cuda-visible:{visible}"
    return base


@dataclass(frozen=True)
class WorkerClients:
    """What a job handler publishes, stores and checks with; started and stopped by `serve_jobs`."""

    settings: Settings
    worker: str
    storage: Storage
    producer: AIOKafkaProducer
    cancels: CancelWatcher


class JobHandler(Protocol):
    """A service's job: what one record means and does."""

    async def handle(self, record: ConsumerRecord[bytes, bytes]) -> bool:
        """Process one record; True once its final event (or dead letter) is acknowledged, so the
        offset may be committed; False to leave it uncommitted (redelivered)."""
        ...

    def on_shutdown(self) -> None:
        """Shutdown was requested while a job runs (the grace period starts)."""
        ...


async def serve_jobs(
    settings: Settings,
    *,
    name: str,
    topic: str,
    group_id: str,
    load: Callable[[], M],
    make_handler: Callable[[M, WorkerClients], JobHandler],
    grace_s: float,
    static_membership: bool = False,
    shutdown: Shutdown | None = None,
) -> None:
    """Load the model once (`load`, in a thread), join `group_id` on `topic` and run one job at a time
    until SIGTERM/SIGINT; logs `{name}.ready` and `{name}.stopped`.

    With `static_membership` the consumer joins with `group.instance.id` = the worker name.
    """
    shutdown = shutdown or Shutdown()
    shutdown.install()
    worker = worker_name(settings)
    model = await asyncio.to_thread(load)
    if shutdown.requested.is_set():
        return
    await ensure_topics(settings)
    storage = open_storage(settings)
    producer = make_producer(settings)
    cancels = CancelWatcher(settings)
    consumer = make_job_consumer(settings, group_id, worker if static_membership else None)
    listener = PausingListener(consumer)
    consumer.subscribe([topic], listener=listener)
    await producer.start()
    try:
        await cancels.start()
        handler = make_handler(model, WorkerClients(settings, worker, storage, producer, cancels))
        listener.started_at = time.monotonic()
        await consumer.start()
        log.info(f"{name}.ready", worker=worker, group=group_id)
        await consume_one_at_a_time(
            consumer, listener, handler.handle, shutdown, grace_s=grace_s, on_shutdown=handler.on_shutdown
        )
    finally:
        # Closing the consumer sends LeaveGroup (dynamic members), so the partitions move at once.
        for close in (consumer.stop, cancels.stop, producer.stop, storage.close):
            with contextlib.suppress(Exception):
                await close()
        log.info(f"{name}.stopped", worker=worker)
