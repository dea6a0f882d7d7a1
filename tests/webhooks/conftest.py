"""Webhook fixtures: a real HTTP receiver on loopback that fails, is slow or answers as each test scripts it."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from aiokafka import AIOKafkaProducer

from acefarm.devtools.broker import free_port
from acefarm.infra.settings import Settings
from schemas import topics
from schemas.events import TaskStatusRecord, WebhookDelivery
from schemas.status import TaskState, TaskStatus
from schemas.webhooks import ATTEMPT_HEADER, DELIVERY_HEADER, EVENT_HEADER, WebhookTarget
from tests.gateway.conftest import events_for

SECRET = "test-webhook-secret-0123456789abcdef"
FAIL_BODY = "broken " * 200_000
"""What a failing receiver answers: far more than the service may read."""

Action = str | float
"""'ok' (204), 'fail' (500 with a 1.4 MB body) or seconds to wait before answering 200."""


def webhook_settings(kafka_env: dict[str, str], **overrides: Any) -> Settings:
    """Settings for a webhook service on the test broker with short timeouts and backoff."""
    base: dict[str, Any] = {k.lower(): v for k, v in kafka_env.items()}
    base.update(
        webhook_secret=SECRET,
        webhook_allow_private=True,
        webhook_timeout_s=1.0,
        webhook_connect_timeout_s=0.5,
        webhook_backoff_s=0.3,
        webhook_backoff_max_s=1.0,
        webhook_retry_for_s=4.0,
        log_format="console",
    )
    base.update(overrides)
    return Settings(**base)


@dataclass(frozen=True)
class Call:
    """One request the receiver got."""

    headers: dict[str, str]
    body: bytes
    action: Action

    @property
    def delivery_id(self) -> str:
        return self.headers[DELIVERY_HEADER]

    @property
    def event(self) -> str:
        return self.headers[EVENT_HEADER]

    @property
    def attempt(self) -> int:
        return int(self.headers[ATTEMPT_HEADER])


class Receiver:
    """An aiohttp server on 127.0.0.1: per path, a script of actions (the last one repeats)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.scripts: dict[str, list[Action]] = {}
        self.calls: dict[str, list[Call]] = defaultdict(list)

    def url(self, path: str, *script: Action) -> str:
        """The URL of `path`, answering with `script` (default: always 'ok')."""
        self.scripts[path] = list(script or ("ok",))
        return f"http://127.0.0.1:{self.port}{path}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        script = self.scripts.get(request.path, ["ok"])
        action = script.pop(0) if len(script) > 1 else script[0]
        self.calls[request.path].append(Call(dict(request.headers), await request.read(), action))
        if action == "fail":
            return web.Response(status=500, text=FAIL_BODY)
        if isinstance(action, float):
            await asyncio.sleep(action)
            return web.Response(status=200)
        return web.Response(status=204)

    def delivered(self, path: str) -> list[Call]:
        """The calls to `path` that were answered 2xx in time."""
        return [call for call in self.calls[path] if call.action == "ok"]


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[Receiver]:
    """The receiver, serving for the whole module."""
    server = Receiver()
    app = web.Application()
    app.router.add_post("/{tail:.*}", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", server.port).start()
    try:
        yield server
    finally:
        await runner.cleanup()


@pytest.fixture(scope="module")
async def producer(kafka_env: dict[str, str]) -> AsyncIterator[AIOKafkaProducer]:
    """A plain producer standing in for `streams`."""
    raw = AIOKafkaProducer(bootstrap_servers=kafka_env["KAFKA_BOOTSTRAP_SERVERS"], acks="all")
    await raw.start()
    yield raw
    await raw.stop()


PublishStatus = Callable[..., Awaitable[TaskStatus]]


@pytest.fixture
def publish_status(producer: AIOKafkaProducer) -> PublishStatus:
    """Publish a status snapshot as `streams` would."""

    async def publish(
        task_id: str, version: int, state: TaskState, url: str, events: list[str], **fields: Any
    ) -> TaskStatus:
        now = datetime.now(UTC)
        target = WebhookTarget.model_validate({"url": url, "events": events})
        status = TaskStatus(
            task_id=task_id, status=state, created_at=now, updated_at=now, version=version, webhook=target, **fields
        )
        record = TaskStatusRecord(task_id=task_id, status=status)
        await producer.send_and_wait(topics.TASK_STATUS, record.to_bytes(), key=task_id.encode())
        return status

    return publish


async def until(done: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    """Wait until `done()` holds; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def reports(kafka_env: dict[str, str], task_id: str) -> list[WebhookDelivery]:
    """The webhook delivery reports about `task_id` on `TASK_EVENTS` so far."""
    found = await events_for(kafka_env["KAFKA_BOOTSTRAP_SERVERS"], topics.TASK_EVENTS, task_id)
    return [event for _, event in found if isinstance(event, WebhookDelivery)]
