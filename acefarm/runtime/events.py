"""One job's Kafka traffic: the request parsed (anything malformed dead-lettered), then its lifecycle
events published on `TASK_EVENTS` (non-final ones enqueued, the final one awaited)."""

from __future__ import annotations

import asyncio
from typing import TypeVar

from aiokafka import AIOKafkaProducer, ConsumerRecord
from aiokafka.structs import RecordMetadata
from pydantic import ValidationError

from acefarm.infra.kafka import dead_letter, publish, send
from acefarm.infra.logging import get_logger
from acefarm.infra.storage import Storage
from schemas import topics
from schemas.events import AnyEvent, Envelope, InvalidRecord, parse_event, validate_record

log = get_logger(__name__)
E = TypeVar("E", bound=Envelope)


async def parse_request(
    producer: AIOKafkaProducer, record: ConsumerRecord[bytes, bytes], expected: type[E], worker: str
) -> E | None:
    """The record's event when it is valid for its topic (`schemas.events.validate_record`, the rule every
    consumer applies) and an `expected`; otherwise it is dead-lettered and None returned."""
    try:
        event = validate_record(record.topic, record.key, record.value)
    except InvalidRecord as error:
        await dead_letter(producer, record, str(error), worker)
        return None
    if not isinstance(event, expected):
        await dead_letter(producer, record, f"expected a {_type_name(expected)} event, got {event.type}", worker)
        return None
    return event


class JobEvents:
    """Publishes a job's lifecycle events on `TASK_EVENTS`.

    `emit` enqueues a progress event without waiting for its acknowledgement: waiting for each would
    cost a broker round trip per event, and it is not needed. `TaskStarted` goes through `announce`:
    enqueued the same way, then its delivery is awaited (one round trip, no exception: a failure is
    logged by `settle` like any enqueued event) before the work begins, so a job that kills its process
    at once still shows its attempts. Every
    event of a task has the task id as key, so they share one partition, and the producer writes one
    partition in send order (one request in flight per partition, retries at the head of the
    queue). The final event goes through `publish`, after these, and is awaited; the offset is
    committed only after that ack, so by then each earlier event has settled too (`settle` logs any
    that failed). A lost progress event only hides an intermediate state; the final one carries
    the outcome.
    """

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._unacked: list[asyncio.Future[RecordMetadata]] = []
        self._failures: list[BaseException] = []

    async def emit(self, event: Envelope) -> None:
        """Enqueue a non-final event; its acknowledgement is checked by `settle`."""
        self._collect()
        self._unacked.append(await send(self._producer, topics.TASK_EVENTS, event))

    async def announce(self, event: Envelope) -> None:
        """Enqueue a non-final event and wait until the broker answered (failures are left to `settle`)."""
        self._collect()
        delivery = await send(self._producer, topics.TASK_EVENTS, event)
        self._unacked.append(delivery)
        await asyncio.wait({delivery})

    async def publish(self, event: Envelope) -> None:
        """Publish an event (the final one) and wait for the broker's acknowledgement."""
        await publish(self._producer, topics.TASK_EVENTS, event)

    async def settle(self) -> None:
        """Wait for the enqueued events and log those that failed; call once the job is over."""
        if self._unacked:
            await asyncio.wait(self._unacked)
        self._collect()
        if self._failures:
            log.warning("job.event_not_delivered", count=len(self._failures), error=repr(self._failures[0]))
        self._failures.clear()

    def _collect(self) -> None:
        """Keep only the events not yet acknowledged (a long job sends many), noting failed ones."""
        for future in self._unacked:
            if future.done():
                error = asyncio.CancelledError() if future.cancelled() else future.exception()
                if error is not None:
                    self._failures.append(error)
        self._unacked = [future for future in self._unacked if not future.done()]


def _type_name(expected: type[Envelope]) -> str:
    default = expected.model_fields["type"].default
    return str(default) if isinstance(default, str) else expected.__name__


async def read_stored_event(storage: Storage, key: str) -> AnyEvent | None:
    """The event a worker stored at `key` (an outcome or a forward to republish), or None when there is
    none or it does not parse."""
    try:
        raw = await storage.get_bytes(key)
    except FileNotFoundError:
        return None
    try:
        return parse_event(raw)
    except ValidationError:
        return None
