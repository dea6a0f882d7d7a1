"""What the gateway holds while it runs: settings, the Kafka producer, storage and the status view.

`running_gateway` starts them all in the app's lifespan and yields a `GatewayState` with every part
started; handlers receive it as the `gateway` dependency (`provide_gateway`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer
from litestar.datastructures import State

from acefarm.infra.kafka import ensure_topics, make_producer
from acefarm.infra.logging import get_logger
from acefarm.infra.settings import Settings
from acefarm.infra.storage import Storage, open_storage
from gateway.status_view import StatusView

log = get_logger(__name__)

KAFKA_PROBE_TIMEOUT_S = 3.0
STATE_KEY = "gateway"
"""Where the lifespan keeps the `GatewayState` on `app.state`."""


@dataclass(frozen=True)
class GatewayState:
    """The running gateway's resources, all started; one per app, injected into handlers as `gateway`."""

    settings: Settings
    producer: AIOKafkaProducer
    storage: Storage
    view: StatusView
    in_flight: set[str] = field(default_factory=set)
    """Task ids of `POST /generate` requests being checked and published right now."""

    async def kafka_answers(self) -> bool:
        """Whether the broker answers a metadata request within a few seconds."""
        client: Any = self.producer.client
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.fetch_all_metadata(), KAFKA_PROBE_TIMEOUT_S)
            return True
        return False

    def ready(self) -> bool:
        """Whether the status view is running and has read the whole status topic once."""
        return self.view.running and self.view.caught_up.is_set()

    @property
    def public_base_url(self) -> str:
        """PUBLIC_BASE_URL without a trailing slash ('' for relative URLs)."""
        return self.settings.public_base_url.rstrip("/")


@asynccontextmanager
async def running_gateway(settings: Settings) -> AsyncIterator[GatewayState]:
    """Create topics, start the producer, open storage and start the status view; stop them in reverse."""
    await ensure_topics(settings)
    async with AsyncExitStack() as stack:
        stack.callback(log.info, "gateway.stopped")
        producer = make_producer(settings)
        await producer.start()
        stack.push_async_callback(producer.stop)
        storage = open_storage(settings)
        stack.push_async_callback(storage.close)
        starter = getattr(storage, "start", None)  # S3 opens its client and bucket up front
        if starter is not None:
            await starter()
        view = StatusView(settings)
        stack.push_async_callback(view.stop)
        await view.start()
        log.info("gateway.started", storage=settings.storage_backend)
        yield GatewayState(settings=settings, producer=producer, storage=storage, view=view)


def provide_gateway(state: State) -> GatewayState:
    """The `gateway` dependency: the `GatewayState` the lifespan put on `app.state`."""
    gateway: GatewayState = state[STATE_KEY]
    return gateway
