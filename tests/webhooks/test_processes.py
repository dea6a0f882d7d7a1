"""`acefarm webhooks` as a real process: a retry survives SIGKILL; with `acefarm streams`, a dead receiver
ends up recorded as failed on the task's status."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from acefarm.infra.kafka import make_consumer, publish
from schemas import topics
from schemas.events import GenerationRequested, TaskStarted, TaskStatusRecord, TaskSucceeded
from schemas.generation import GenerationParams
from schemas.status import TaskState, TaskStatus
from schemas.webhooks import verify_signature
from tests.support.processes import Service, start_service
from tests.webhooks.conftest import SECRET, PublishStatus, Receiver, until, webhook_settings

ENV = {
    "WEBHOOK_SECRET": SECRET,
    "WEBHOOK_ALLOW_PRIVATE": "true",
    "WEBHOOK_TIMEOUT_S": "1",
    "WEBHOOK_CONNECT_TIMEOUT_S": "0.5",
}


@pytest.fixture
def start(kafka_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Service]]:
    """Start acefarm service processes on the test broker; every one is killed at the end."""
    started: list[Service] = []

    def run(name: str, command: str, **env: str) -> Service:
        service = start_service(name, ["-m", "acefarm", command], {**kafka_env, **ENV, **env}, tmp_path / "logs")
        started.append(service)
        return service

    try:
        yield run
    finally:
        for service in started:
            service.kill()


async def wait_for_log(service: Service, text: str, timeout_s: float = 60.0) -> None:
    await until(lambda: text in service.log(), f"{text!r} in the {service.name} log", timeout_s)


async def test_a_pending_retry_survives_sigkill_of_the_service(
    start: Callable[..., Service], receiver: Receiver, publish_status: PublishStatus
) -> None:
    task = f"wk-{uuid.uuid4().hex[:12]}"
    path = f"/{task}"
    url = receiver.url(path, "fail")
    slow_retries = {"WEBHOOK_BACKOFF_S": "8", "WEBHOOK_BACKOFF_MAX_S": "8", "WEBHOOK_RETRY_FOR_S": "600"}
    first = start("webhooks-1", "webhooks", **slow_retries)
    await publish_status(task, 1, TaskState.SUCCESS, url, ["completed"])
    await wait_for_log(first, "webhooks.retry_scheduled")
    await asyncio.sleep(1.5)  # the snapshot's offset is committed right after the retry is acknowledged
    first.kill()
    receiver.scripts[path] = ["ok"]
    second = start("webhooks-2", "webhooks", **slow_retries)
    await until(lambda: len(receiver.delivered(path)) == 1, "the retry after the restart", timeout_s=90)
    calls = receiver.calls[path]
    assert [(c.attempt, c.action) for c in calls] == [(1, "fail"), (2, "ok")], second.log()[-3000:]
    assert calls[0].delivery_id == calls[1].delivery_id and calls[0].body == calls[1].body
    verify_signature(SECRET, calls[1].headers, calls[1].body)


@pytest.fixture
async def status_watch(kafka_env: dict[str, str]) -> AsyncIterator[Callable[[str], AsyncIterator[TaskStatus]]]:
    settings = webhook_settings(kafka_env)
    consumer = make_consumer(settings, topics.TASK_STATUS, group_id=None)
    await consumer.start()

    async def statuses(task_id: str) -> AsyncIterator[TaskStatus]:
        while True:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                for record in records:
                    if record.key == task_id.encode():
                        yield TaskStatusRecord.model_validate_json(record.value or b"").status

    try:
        yield statuses
    finally:
        await consumer.stop()


async def test_a_dead_receiver_is_recorded_as_failed_on_the_task(
    start: Callable[..., Service],
    receiver: Receiver,
    producer: AIOKafkaProducer,
    status_watch: Callable[[str], AsyncIterator[TaskStatus]],
) -> None:
    task = f"wd-{uuid.uuid4().hex[:12]}"
    url = receiver.url(f"/{task}", "fail")
    start("streams", "streams")
    start("webhooks", "webhooks", WEBHOOK_BACKOFF_S="0.3", WEBHOOK_BACKOFF_MAX_S="1", WEBHOOK_RETRY_FOR_S="3")
    request = GenerationRequested(
        task_id=task, params=GenerationParams(prompt="x", duration=5), webhook=url, webhook_events=["completed"]
    )
    await publish(producer, topics.GENERATION_REQUESTS, request)
    await publish(producer, topics.TASK_EVENTS, TaskStarted(task_id=task, attempt="a1", worker="w"))
    await publish(producer, topics.TASK_EVENTS, TaskSucceeded(task_id=task, attempt="a1"))
    async with asyncio.timeout(120):
        async for status in status_watch(task):
            if status.webhook_status is not None and status.webhook_status.state == "failed":
                break
    recorded = status.webhook_status
    assert status.status is TaskState.SUCCESS and recorded is not None
    calls = receiver.calls[f"/{task}"]
    assert recorded.attempts == len(calls) >= 3
    assert {c.delivery_id for c in calls} == {recorded.delivery_id}
    assert recorded.last_error is not None and recorded.last_error.startswith("HTTP 500")
