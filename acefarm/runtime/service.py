"""A long-job worker process (GPU consumer, trainer): its kind, who it is, its clients, its job loop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, NoReturn, TypeVar

from aiokafka import ConsumerRecord
from opentelemetry.trace import SpanKind

from acefarm.infra import eventloop
from acefarm.infra.kafka import ensure_topics, make_producer
from acefarm.infra.logging import configure_logging, get_logger
from acefarm.infra.metrics import serving_metrics
from acefarm.infra.settings import Settings
from acefarm.infra.storage import open_storage
from acefarm.infra.tracing import configure_tracing, kafka_carrier, traced
from acefarm.runtime.cancels import CancelWatcher
from acefarm.runtime.group_loop import Shutdown, make_job_consumer
from acefarm.runtime.heartbeat import AnnouncingListener, Heartbeat
from acefarm.runtime.identity import Capabilities, PoolTopics, WorkerIdentity, identify, no_capabilities
from acefarm.runtime.job_metrics import observe_queue_wait
from acefarm.runtime.lifecycle import JobRunner, JobWorker, WorkerClients
from acefarm.runtime.pipeline import Batching, JobSignal, consume_pipelined
from acefarm.runtime.watchdog import within_deadline

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
    pool_topics: PoolTopics | None = None
    """For a kind that serves model pools: (topic, group) of a pool (`topic`/`group_id` are the default pool's)."""
    capabilities: Callable[[M], Capabilities] = no_capabilities
    """What the loaded model can do and its device."""
    batches: bool = False
    """Its jobs may share an engine call (`JobWorker.batch_key`, up to `MAX_BATCH`; docs/consumer.md, "Batching")."""

    def identify(self, settings: Settings, model: M) -> WorkerIdentity:
        """This worker's identity with `model` loaded: its name, topic, group, pool and capabilities."""
        return identify(
            settings,
            worker_name(settings),
            service=self.service,
            topic=self.topic,
            group_id=self.group_id,
            model=model,
            pool_topics=self.pool_topics,
            capabilities=self.capabilities(model),
        )


EXIT_WEDGED = 75
"""Exit status of a worker that gave up on a job past its deadline (EX_TEMPFAIL): restart it."""
CLOSE_S = 5.0
"""Bound on closing each client when the process stops."""


class WorkerWedged(RuntimeError):
    """A job passed its deadline; what it was stuck in may still hold a thread, so the process must go."""


def run_worker(
    settings: Settings, kind: WorkerKind[Any], *, grace_s: float | None = None, static_membership: bool = False
) -> None:
    """Run one worker of `kind` until SIGTERM/SIGINT (blocking); exits with status 1 if it crashes and
    with `EXIT_WEDGED` after a job passed its deadline (its supervisor restarts it).

    `grace_s` defaults to the kind's. Serves Prometheus metrics on `METRICS_PORT` when set and exports
    traces when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. See docs/consumer.md.
    """
    configure_logging(kind.service, settings.log_level, settings.log_format)
    configure_tracing(kind.service, settings)
    grace = kind.grace_s if grace_s is None else grace_s

    async def main() -> None:
        try:
            await serve_jobs(settings, kind, grace_s=grace, static_membership=static_membership)
        except WorkerWedged as wedged:
            log.error(f"{kind.name}.exiting_wedged", reason=str(wedged), exit_code=EXIT_WEDGED)
            exit_now(EXIT_WEDGED)

    try:
        with serving_metrics(settings.metrics_port, settings.metrics_host):
            eventloop.run(main())
    except Exception:
        log.exception(f"{kind.name}.crashed")  # uncommitted work is redelivered to the next worker
        raise SystemExit(1) from None


def exit_now(code: int) -> NoReturn:
    """End the process at once with `code`, without waiting for threads (a stuck one never returns)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


async def serve_jobs(
    settings: Settings,
    kind: WorkerKind[Any],
    *,
    grace_s: float,
    static_membership: bool = False,
    shutdown: Shutdown | None = None,
) -> None:
    """Load the model once (`kind.load`, in a thread), join the kind's group on its topic (its pool's, see
    `WorkerKind.identify`) and run its jobs (the next one prepared while one computes, `consume_pipelined`) until
    SIGTERM/SIGINT; logs `{name}.ready` (with the identity) and
    `{name}.stopped`.

    With `static_membership` the consumer joins with `group.instance.id` = the worker name. A heartbeat
    on `acefarm.workers` announces the worker, its model, pool, task types and device, whether it joined and its
    current job.
    """
    shutdown = shutdown or Shutdown()
    shutdown.install()
    model = await asyncio.to_thread(kind.load, settings)
    if shutdown.requested.is_set():
        return
    identity = kind.identify(settings, model)
    worker = identity.worker
    await ensure_topics(settings)
    storage = open_storage(settings)
    producer = make_producer(settings)
    cancels = CancelWatcher(settings)
    consumer = make_job_consumer(settings, identity.group_id, worker if static_membership else None)
    heartbeat = Heartbeat.of(producer, settings, identity)
    listener = AnnouncingListener(consumer, heartbeat)
    consumer.subscribe([identity.topic], listener=listener)
    await producer.start()
    try:
        await cancels.start()
        runner = JobRunner(kind.make_job(model, settings), WorkerClients(settings, worker, storage, producer, cancels))

        @contextlib.contextmanager
        def job_scope(record: ConsumerRecord[bytes, bytes]) -> Iterator[None]:
            """A job inside the trace its request carries, announced on the heartbeat."""
            observe_queue_wait(record)
            task_id = record.key.decode(errors="replace") if record.key else None
            carrier = kafka_carrier(record.headers)
            with traced(f"{kind.name} job", carrier, SpanKind.CONSUMER), heartbeat.working_on(task_id):
                yield

        async def handle(record: ConsumerRecord[bytes, bytes], ready: JobSignal) -> bool:
            with job_scope(record):
                return await runner.handle(record, ready)

        async def handle_batch(records: list[ConsumerRecord[bytes, bytes]], ready: JobSignal) -> bool:
            return await runner.handle_group(records, ready, scope=job_scope)

        batching = None
        if kind.batches and settings.max_batch > 1:
            batching = Batching(runner.batch_key, handle_batch, settings.max_batch)

        heartbeat.start()
        listener.started_at = time.monotonic()
        await consumer.start()
        log.info(
            f"{kind.name}.ready",
            worker=worker,
            group=identity.group_id,
            topic=identity.topic,
            pool=identity.pool,
            task_types=list(identity.task_types),
            device=identity.device,
        )
        await consume_pipelined(
            consumer,
            listener,
            handle,
            shutdown,
            grace_s=grace_s,
            on_shutdown=runner.on_shutdown,
            until=lambda: runner.wedged,
            batching=batching,
        )
        if runner.wedged:
            raise WorkerWedged("a job passed its deadline; its final event is published and its offset committed")
    finally:
        # Closing the consumer sends LeaveGroup (dynamic members), so the partitions move at once.
        # Each close is bounded: after a wedged job, storage may be the thing that hangs.
        for close in (consumer.stop, heartbeat.stop, cancels.stop, producer.stop, storage.close):
            with contextlib.suppress(Exception):
                await within_deadline(close(), CLOSE_S, name="close")
        log.info(f"{kind.name}.stopped", worker=worker)
