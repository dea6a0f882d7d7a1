"""What the gateway holds while it runs: settings, the Kafka producer, storage and the status view."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer

from acefarm.infra.kafka import ensure_topics, make_producer
from acefarm.infra.logging import get_logger
from acefarm.infra.settings import Settings
from acefarm.infra.storage import Storage, open_storage
from gateway.status_view import StatusView

log = get_logger(__name__)

KAFKA_PROBE_TIMEOUT_S = 3.0


@dataclass
class Gateway:
    """The running gateway's resources; one per app, injected into handlers as `gateway`."""

    settings: Settings
    producer: AIOKafkaProducer | None = None
    storage: Storage | None = None
    view: StatusView | None = None
    in_flight: set[str] = field(default_factory=set)

    async def start(self) -> None:
        """Create topics, start the producer and the status view, open storage."""
        await ensure_topics(self.settings)
        self.producer = make_producer(self.settings)
        await self.producer.start()
        self.storage = open_storage(self.settings)
        starter = getattr(self.storage, "start", None)
        if starter is not None:
            await starter()
        self.view = StatusView(self.settings)
        await self.view.start()
        log.info("gateway.started", storage=self.settings.storage_backend)

    async def stop(self) -> None:
        """Stop everything started by `start`, in reverse order."""
        if self.view is not None:
            await self.view.stop()
        if self.storage is not None:
            await self.storage.close()
        if self.producer is not None:
            await self.producer.stop()
        log.info("gateway.stopped")

    async def kafka_answers(self) -> bool:
        """Whether the broker answers a metadata request within a few seconds."""
        if self.producer is None:
            return False
        client: Any = self.producer.client
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.fetch_all_metadata(), KAFKA_PROBE_TIMEOUT_S)
            return True
        return False

    def ready(self) -> bool:
        """Whether the status view is running and has read the whole status topic once."""
        return self.view is not None and self.view.running and self.view.caught_up.is_set()

    @property
    def public_base_url(self) -> str:
        """PUBLIC_BASE_URL without a trailing slash ('' for relative URLs)."""
        return self.settings.public_base_url.rstrip("/")
