"""A long-job worker process (GPU consumer, trainer): its kind, who it is, its clients, its job loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from acefarm.infra.kafka import ensure_topics, make_producer
from acefarm.infra.logging import configure_logging, get_logger
from acefarm.infra.pools import worker_pool, worker_pool_key
from acefarm.infra.settings import Settings
from acefarm.infra.storage import open_storage
from acefarm.runtime.cancels import CancelWatcher
from acefarm.runtime.group_loop import PausingListener, Shutdown, consume_one_at_a_time, make_job_consumer
from acefarm.runtime.lifecycle import JobRunner, JobWorker, WorkerClients

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
class Capabilities:
    """What a loaded model can do and where it runs (reported by `WorkerKind.capabilities`)."""

    task_types: tuple[str, ...] = ()
    device: str | None = None


@dataclass(frozen=True)
class WorkerIdentity:
    """Who a running worker is and what it serves: logged with `{name}.ready`, and what a heartbeat announces."""

    worker: str
    service: str
    topic: str
    group_id: str
    model: str | None
    """The model pool it serves (`MODEL_NAME`, else `DEFAULT_MODEL`); None for kinds without pools."""
    task_types: tuple[str, ...]
    device: str


@dataclass(frozen=True)
class WorkerKind(Generic[M]):
    """One kind of long-job worker: what it consumes, how its model loads, and its job-specific part."""

    name: str
    """Prefix of its process log events (`{name}.ready`, `{name}.stopped`, `{name}.crashed`)."""
    service: str
    """The service name in its log lines."""
    topic: str
    group_id: str
    load: Callable[[Settings], M]
    """Loads the model once per process (blocking; runs in a thread)."""
    make_job: Callable[[M, Settings], JobWorker[Any]]
    grace_s: float
    """Default seconds a running job gets after SIGTERM before it is abandoned (left uncommitted)."""
    pooled: bool = False
    """Whether it serves a model pool: a named pool's workers read `{topic}.{pool}` in `{group_id}.{pool}`."""
    capabilities: Callable[[M], Capabilities] = field(default=lambda model: Capabilities())
    """What the loaded model can do and its device."""


def identify(settings: Settings, kind: WorkerKind[M], model: M) -> WorkerIdentity:
    """The identity of a worker of `kind` with `model` loaded: its name, topic, group, pool and capabilities."""
    topic, group_id, pool = kind.topic, kind.group_id, None
    if kind.pooled:
        pool = worker_pool(settings)
        key = worker_pool_key(settings)
        if key is not None:
            topic, group_id = f"{topic}.{key}", f"{group_id}.{key}"
    caps = kind.capabilities(model)
    return WorkerIdentity(
        worker=worker_name(settings),
        service=kind.service,
        topic=topic,
        group_id=group_id,
        model=pool,
        task_types=caps.task_types,
        device=caps.device or settings.device,
    )


def run_worker(
    settings: Settings, kind: WorkerKind[Any], *, grace_s: float | None = None, static_membership: bool = False
) -> None:
    """Run one worker of `kind` until SIGTERM/SIGINT (blocking); exits with status 1 if it crashes.

    `grace_s` defaults to the kind's. See docs/consumer.md.
    """
    configure_logging(kind.service, settings.log_level, settings.log_format)
    grace = kind.grace_s if grace_s is None else grace_s
    try:
        asyncio.run(serve_jobs(settings, kind, grace_s=grace, static_membership=static_membership))
    except Exception:
        log.exception(f"{kind.name}.crashed")  # uncommitted work is redelivered to the next worker
        raise SystemExit(1) from None


async def serve_jobs(
    settings: Settings,
    kind: WorkerKind[Any],
    *,
    grace_s: float,
    static_membership: bool = False,
    shutdown: Shutdown | None = None,
) -> None:
    """Load the model once (`kind.load`, in a thread), join the kind's group on its topic (its pool's, see
    `identify`) and run one job at a time until SIGTERM/SIGINT; logs `{name}.ready` (with the identity) and
    `{name}.stopped`.

    With `static_membership` the consumer joins with `group.instance.id` = the worker name.
    """
    shutdown = shutdown or Shutdown()
    shutdown.install()
    model = await asyncio.to_thread(kind.load, settings)
    if shutdown.requested.is_set():
        return
    identity = identify(settings, kind, model)
    worker = identity.worker
    await ensure_topics(settings)
    storage = open_storage(settings)
    producer = make_producer(settings)
    cancels = CancelWatcher(settings)
    consumer = make_job_consumer(settings, identity.group_id, worker if static_membership else None)
    listener = PausingListener(consumer)
    consumer.subscribe([identity.topic], listener=listener)
    await producer.start()
    try:
        await cancels.start()
        runner = JobRunner(kind.make_job(model, settings), WorkerClients(settings, worker, storage, producer, cancels))
        listener.started_at = time.monotonic()
        await consumer.start()
        log.info(
            f"{kind.name}.ready",
            worker=worker,
            group=identity.group_id,
            topic=identity.topic,
            model=identity.model,
            task_types=list(identity.task_types),
            device=identity.device,
        )
        await consume_one_at_a_time(
            consumer, listener, runner.handle, shutdown, grace_s=grace_s, on_shutdown=runner.on_shutdown
        )
    finally:
        # Closing the consumer sends LeaveGroup (dynamic members), so the partitions move at once.
        for close in (consumer.stop, cancels.stop, producer.stop, storage.close):
            with contextlib.suppress(Exception):
                await close()
        log.info(f"{kind.name}.stopped", worker=worker)
