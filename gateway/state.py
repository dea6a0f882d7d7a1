"""What the gateway holds while it runs: settings, the Kafka producer, storage, the status view, the
scheduler's queue view, the accepted-task follower, the key ring (AUTH_MODE=keys), the link signer and
admission control.

`running_gateway` starts them all in the app's lifespan and yields a `GatewayState` with every part
started; handlers receive it as the `gateway` dependency (`provide_gateway`).
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer
from litestar.datastructures import State

from acefarm.infra.kafka import ensure_topics, make_producer
from acefarm.infra.logging import get_logger
from acefarm.infra.settings import Settings
from acefarm.infra.storage import Storage, open_storage
from gateway.accepted import AcceptedTasks
from gateway.admission import Admission, BacklogProbe
from gateway.dataset_checks import DatasetChecks
from gateway.keyring import KeyRing
from gateway.queue_view import QueueView
from gateway.signed_links import LinkSigner
from gateway.sse import Frame, FrameCache
from gateway.status_view import StatusView
from schemas.queues import QueuePosition
from schemas.status import TaskKind, TaskState, TaskStatus
from schemas.tenancy import ANONYMOUS

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
    queues: QueueView
    signer: LinkSigner
    admission: Admission
    accepted: AcceptedTasks
    """Follows the request topics: accepted tasks are known before `streams` folds them."""
    dataset_checks: DatasetChecks
    """Dataset zip checks in child processes, a few at a time."""
    keyring: KeyRing | None = None
    """The farm's API keys; None when `AUTH_MODE=off`."""
    in_flight: set[str] = field(default_factory=set)
    """Task ids of `POST /generate` requests being checked and published right now."""
    frames: FrameCache = field(default_factory=FrameCache)
    """Encoded SSE frames shared by the subscribers of a task."""
    renderers: weakref.WeakValueDictionary[str, Callable[[TaskStatus], Frame]] = field(
        default_factory=weakref.WeakValueDictionary
    )
    """Each viewer's SSE frame renderer, while any of the viewer's streams is open (`gateway.tasks`)."""

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

    def intake_ready(self) -> bool:
        """Whether the request topics are followed and read up to where they ended at start."""
        return self.accepted.running and self.accepted.caught_up

    def tasks_current(self) -> bool:
        """Whether every task any gateway accepted before this one started is known here (else: 503, not 404)."""
        return self.view.caught_up.is_set() and self.accepted.caught_up

    def keys_ready(self) -> bool:
        """Whether the key ring follows its topic and has read every key once (always, with auth off)."""
        ring = self.keyring
        return ring is None or (ring.reader.running and ring.caught_up.is_set())

    def queue_position(self, status: TaskStatus) -> QueuePosition | None:
        """Where a pending generation job stands in the scheduler's queue, with its ETA; None otherwise."""
        if status.status is not TaskState.PENDING or status.kind is not TaskKind.GENERATION:
            return None
        store = self.view.store
        return self.queues.position(status.task_id, status.owner or ANONYMOUS, lambda: store.pending_after(status))

    @property
    def public_base_url(self) -> str:
        """PUBLIC_BASE_URL without a trailing slash ('' for relative URLs)."""
        return self.settings.public_base_url.rstrip("/")


@asynccontextmanager
async def running_gateway(
    settings: Settings, keyring: KeyRing | None = None, backlog: BacklogProbe | None = None
) -> AsyncIterator[GatewayState]:
    """Create topics, start the producer, open storage, start the status view, the queue view and `keyring`
    (when given); stop them in reverse. Admission control refuses on the farm's queue only when given a
    `backlog` probe."""
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
        queues = QueueView(settings)
        stack.push_async_callback(queues.stop)
        await queues.start()
        accepted = AcceptedTasks(settings, view.store)
        stack.push_async_callback(accepted.stop)
        await accepted.start()
        if keyring is not None:
            stack.push_async_callback(keyring.stop)
            await keyring.start()
        else:
            log.warning(
                "gateway.auth_off",
                consequence="every caller is an admin: anyone who reaches the port sees, cancels and deletes "
                "everything; set AUTH_MODE=keys and create keys with `acefarm keys create`",
            )
        signer = LinkSigner.from_settings(settings)
        admission = Admission(settings, view.store.unfinished, view.caught_up, backlog)
        log.info("gateway.started", storage=settings.storage_backend, auth_mode=settings.auth_mode)
        yield GatewayState(
            settings=settings,
            producer=producer,
            storage=storage,
            view=view,
            queues=queues,
            signer=signer,
            admission=admission,
            accepted=accepted,
            dataset_checks=DatasetChecks(settings),
            keyring=keyring,
        )


def provide_gateway(state: State) -> GatewayState:
    """The `gateway` dependency: the `GatewayState` the lifespan put on `app.state`."""
    gateway: GatewayState = state[STATE_KEY]
    return gateway
