"""The GPU consumer process: engine loaded once, one job at a time from the `gpu-workers` group."""

from __future__ import annotations

import asyncio
import contextlib
import time

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from acefarm.kafka import ensure_topics, make_consumer, make_producer
from acefarm.logging import configure_logging, get_logger
from acefarm.settings import Settings
from acefarm.storage import open_storage
from gpu_consumer.cancellations import CancelWatcher
from gpu_consumer.engine.base import Engine
from gpu_consumer.identity import worker_name
from gpu_consumer.jobs import JobHandler
from gpu_consumer.rebalance import PausingListener, pause_all, resume_all
from gpu_consumer.shutdown import Shutdown
from schemas import topics

log = get_logger(__name__)

KEEPALIVE_POLL_S = 0.5
"""How often the consumer polls (with every partition paused) while a job runs."""

DEFAULT_GRACE_S = 30.0


def run_consumer(settings: Settings, *, grace_s: float = DEFAULT_GRACE_S, static_membership: bool = False) -> None:
    """Run the GPU consumer until SIGTERM/SIGINT (blocking). See docs/consumer.md."""
    configure_logging("gpu-consumer", settings.log_level, settings.log_format)
    try:
        asyncio.run(serve(settings, grace_s=grace_s, static_membership=static_membership))
    except Exception:
        log.exception("consumer.crashed")  # uncommitted work is redelivered to the next consumer
        raise SystemExit(1) from None


def load_engine_timed(settings: Settings) -> Engine:
    """Load the engine chosen by `ENGINE` and log how long it took."""
    from gpu_consumer.engine.loader import load_engine

    started = time.monotonic()
    engine = load_engine(settings)
    log.info(
        "engine.loaded",
        engine=getattr(engine, "name", type(engine).__name__),
        seconds=round(time.monotonic() - started, 3),
        device=settings.device,
    )
    return engine


async def serve(
    settings: Settings,
    *,
    grace_s: float = DEFAULT_GRACE_S,
    static_membership: bool = False,
    shutdown: Shutdown | None = None,
    engine: Engine | None = None,
) -> None:
    """Load the engine, join the group and process jobs until shutdown is requested."""
    shutdown = shutdown or Shutdown()
    shutdown.install()
    worker = worker_name(settings)
    if engine is None:
        engine = await asyncio.to_thread(load_engine_timed, settings)
    if shutdown.requested.is_set():
        return
    await ensure_topics(settings)
    storage = open_storage(settings)
    producer = make_producer(settings)
    cancels = CancelWatcher(settings)
    consumer = _make_group_consumer(settings, worker if static_membership else None)
    listener = PausingListener(consumer)
    consumer.subscribe([topics.GENERATION_REQUESTS], listener=listener)
    await producer.start()
    try:
        await cancels.start()
        listener.started_at = time.monotonic()
        await consumer.start()
        handler = JobHandler(
            engine=engine, storage=storage, producer=producer, cancels=cancels, settings=settings, worker=worker
        )
        log.info("consumer.ready", worker=worker, group=topics.GPU_WORKERS_GROUP)
        await _consume(consumer, listener, handler, shutdown, grace_s)
    finally:
        # Closing the consumer sends LeaveGroup (dynamic members), so the partitions move at once.
        with contextlib.suppress(Exception):
            await consumer.stop()
        with contextlib.suppress(Exception):
            await cancels.stop()
        with contextlib.suppress(Exception):
            await producer.stop()
        with contextlib.suppress(Exception):
            await storage.close()
        log.info("consumer.stopped", worker=worker)


def _make_group_consumer(settings: Settings, group_instance_id: str | None) -> AIOKafkaConsumer:
    # Polling continues while a job runs, so max_poll_interval only has to cover the gap between
    # polls, never a job: keep it short, so a wedged loop is noticed and its partitions move.
    max_poll_interval_ms = max(settings.kafka_session_timeout_ms, settings.kafka_rebalance_timeout_ms)
    return make_consumer(
        settings,
        group_id=topics.GPU_WORKERS_GROUP,
        max_poll_records=1,
        max_poll_interval_ms=max_poll_interval_ms,
        group_instance_id=group_instance_id,
    )


async def _consume(
    consumer: AIOKafkaConsumer,
    listener: PausingListener,
    handler: JobHandler,
    shutdown: Shutdown,
    grace_s: float,
) -> None:
    while not shutdown.requested.is_set():
        batch = await consumer.getmany(timeout_ms=1000, max_records=1)
        for records in batch.values():
            for record in records:
                if shutdown.requested.is_set():
                    return  # not started, not committed: the next owner takes it
                await _process(consumer, listener, handler, record, shutdown, grace_s)


async def _process(
    consumer: AIOKafkaConsumer,
    listener: PausingListener,
    handler: JobHandler,
    record: ConsumerRecord[bytes, bytes],
    shutdown: Shutdown,
    grace_s: float,
) -> None:
    """Run one job while staying in the group; commit its offset once its final event is acknowledged."""
    tp = TopicPartition(record.topic, record.partition)
    job = asyncio.create_task(handler.handle(record), name=f"job-{record.partition}-{record.offset}")
    listener.job_running = True
    pause_all(consumer)
    try:
        deadline: float | None = None
        while not job.done():
            if shutdown.requested.is_set() and deadline is None:
                deadline = time.monotonic() + grace_s
                log.info("consumer.waiting_for_job", grace_s=grace_s)
            if shutdown.abandon.is_set() or (deadline is not None and time.monotonic() > deadline):
                job.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await job
                log.warning("consumer.job_abandoned", partition=record.partition, offset=record.offset)
                return  # offset left uncommitted: the job is redelivered
            await asyncio.wait({job}, timeout=KEEPALIVE_POLL_S)
            if not job.done():
                await _keepalive_poll(consumer)
        job.result()  # a publish failure propagates: stop without committing
        await _commit(consumer, tp, record.offset + 1)
    finally:
        listener.job_running = False
        resume_all(consumer)


async def _keepalive_poll(consumer: AIOKafkaConsumer) -> None:
    """Poll with everything paused so the client does not count the consumer as stalled."""
    stray = await consumer.getmany(timeout_ms=0)
    for tp, records in stray.items():  # cannot happen while paused; never lose one if it does
        if records:
            consumer.seek(tp, records[0].offset)


async def _commit(consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> None:
    try:
        await consumer.commit({tp: offset})
    except KafkaError as error:
        # The partition moved during a rebalance: its new owner will redo the job, and the status
        # fold keeps the first terminal state, so the duplicate outcome is harmless.
        log.warning("consumer.commit_failed", partition=tp.partition, offset=offset, error=repr(error))
        return
    if tp in consumer.assignment():
        consumer.seek(tp, offset)  # after a rebalance the position was reset to the old commit
