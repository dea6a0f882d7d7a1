"""Kafka helpers: client options from settings, producers, consumers, topic creation, dead letters."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.structs import RecordMetadata

from acefarm.infra.logging import get_logger
from acefarm.infra.metrics import DEAD_LETTERS
from acefarm.infra.pools import pool_keys
from acefarm.infra.settings import Settings
from acefarm.infra.tracing import trace_headers
from schemas import topics
from schemas.events import DeadLetter, Envelope

log = get_logger(__name__)


def client_options(settings: Settings) -> dict[str, Any]:
    """Connection and security options shared by every aiokafka client."""
    opts: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(
            cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None
        )
        if settings.kafka_ssl_certfile:
            context.load_cert_chain(
                str(settings.kafka_ssl_certfile),
                str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
            )
        opts["ssl_context"] = context
    if settings.kafka_security_protocol.startswith("SASL"):
        opts["sasl_mechanism"] = settings.kafka_sasl_mechanism or "PLAIN"
        opts["sasl_plain_username"] = settings.kafka_sasl_username
        opts["sasl_plain_password"] = (
            settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else None
        )
    return opts


def make_producer(settings: Settings, **overrides: Any) -> AIOKafkaProducer:
    """A producer with `acks=all` and `KAFKA_LINGER_MS` linger (0 by default; not started).

    Idempotence is left off: the embedded Tansu broker rejects InitProducerId, and duplicate
    events are already harmless because the status fold is idempotent per event and attempt.

    `linger_ms=0`: aiokafka keeps one produce request in flight per broker, so records sent while
    one is in flight are batched anyway; lingering only delays the lone record of an idle moment
    (measured on Tansu: 0.9 ms to the ack with linger 0, 3.2 ms with linger 2).
    """
    options: dict[str, Any] = {"acks": "all", "linger_ms": settings.kafka_linger_ms, "request_timeout_ms": 30_000}
    return AIOKafkaProducer(**client_options(settings), **(options | overrides))


IDLE_POLL_MS = 5000
"""How long a follower's `getmany` waits when nothing arrives: a record ends the wait at once, so this only
bounds how often an idle follower wakes (7 followers in a gateway at 500 ms were 14 wake-ups a second)."""


FETCHER_WAKE_MS = 2000
"""The longest aiokafka's background fetch task sleeps with nothing to do (its `consumer_timeout_ms`; 200 by
default). It wakes at once for a fetch answer, a consumed batch, a resumed partition or a new assignment, so the
timeout is only a safety net; at 200 ms every idle consumer woke its process five times a second."""


def make_consumer(settings: Settings, *topic_names: str, group_id: str | None, **overrides: Any) -> AIOKafkaConsumer:
    """A consumer with manual commits, the configured group timeouts and fetch wait (not started).

    The fetch wait is a long poll: Apache Kafka, and the embedded broker through its wake-up proxy,
    answer a waiting fetch as soon as data arrives, so the wait only sets how often an idle consumer
    asks again (`Settings.fetch_max_wait_ms`: 500 ms on Kafka, 30 s on the embedded broker).
    """
    return AIOKafkaConsumer(
        *topic_names,
        **client_options(settings),
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
        rebalance_timeout_ms=settings.kafka_rebalance_timeout_ms,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        consumer_timeout_ms=FETCHER_WAKE_MS,
        **overrides,
    )


def topic_plan(settings: Settings) -> list[NewTopic]:
    """Every acefarm topic with its partition count and config.

    All task-keyed topics share one partition count so the status fold in `streams` is
    co-partitioned: the same task id lands on the same partition number everywhere (the intake and
    ready topics of every model pool too, `acefarm.infra.pools.pool_keys`). The API key and worker
    heartbeat topics are small and read whole by every gateway: one compacted partition.
    """
    n, rf = settings.kafka_partitions, settings.kafka_replication_factor
    compact = {"cleanup.policy": "compact"}
    return [
        *(NewTopic(topics.generation_requests(pool), n, rf) for pool in pool_keys(settings)),
        *(NewTopic(topics.generation_ready(pool), n, rf) for pool in pool_keys(settings)),
        NewTopic(topics.PLANNING_REQUESTS, n, rf),
        NewTopic(topics.TRAINING_REQUESTS, n, rf),
        NewTopic(topics.TASK_EVENTS, n, rf),
        NewTopic(topics.TASK_CONTROL, n, rf),
        NewTopic(topics.TASK_STATUS, n, rf, topic_configs=compact),
        NewTopic(topics.SCHEDULER_QUEUES, 1, rf, topic_configs=compact),
        NewTopic(topics.DEAD_LETTER, 1, rf),
        NewTopic(topics.WEBHOOK_RETRIES, n, rf),
        NewTopic(topics.API_KEYS, 1, rf, topic_configs=compact),
        NewTopic(topics.WORKERS, 1, rf, topic_configs=compact),
    ]


async def ensure_topics(settings: Settings) -> None:
    """Create missing acefarm topics; existing ones are left as they are."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topic_plan(settings) if t.name not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # another process won the race
                await admin.create_topics(missing)
            log.info("kafka.topics_created", topics=[t.name for t in missing])
    finally:
        await admin.close()


async def send(producer: AIOKafkaProducer, topic: str, event: Envelope) -> asyncio.Future[RecordMetadata]:
    """Enqueue one event keyed by its task id; the returned future resolves on the broker's ack.

    aiokafka keeps at most one produce request in flight per partition and puts a retried batch
    back at the head of its partition's queue, so events with the same key are written in the
    order they were sent: once a later event is acknowledged, every earlier one has settled.
    The current trace context travels in the record's headers (`traceparent`).
    """
    return await producer.send(topic, event.to_bytes(), key=event.task_id.encode(), headers=trace_headers())


async def publish(producer: AIOKafkaProducer, topic: str, event: Envelope) -> None:
    """Send one event keyed by its task id and wait for the broker's acknowledgement.

    The current trace context travels in the record's headers (`traceparent`).
    """
    await producer.send_and_wait(topic, event.to_bytes(), key=event.task_id.encode(), headers=trace_headers())


async def dead_letter(
    producer: AIOKafkaProducer, record: ConsumerRecord[bytes, bytes], error: str, consumer: str
) -> None:
    """Publish a record that failed validation to the dead-letter topic."""
    await publish(producer, topics.DEAD_LETTER, DeadLetter.of_record(record, error, consumer))
    DEAD_LETTERS.labels(consumer=consumer).inc()
    log.warning("kafka.dead_letter", topic=record.topic, offset=record.offset, error=error[:300])
