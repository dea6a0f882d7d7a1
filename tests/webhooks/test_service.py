"""The webhook service in this process on the embedded broker, calling a real receiver on loopback."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from acefarm.infra.settings import Settings
from schemas.status import Stage, TaskState, WebhookPayload
from schemas.webhooks import verify_signature
from tests.webhooks.conftest import SECRET, PublishStatus, Receiver, reports, until, webhook_settings
from webhooks.sender import CheckingResolver, Sender
from webhooks.service import serve


@pytest.fixture(scope="module")
async def service(kafka_env: dict[str, str]) -> AsyncIterator[Settings]:
    """`webhooks.service.serve` running for the module."""
    settings = webhook_settings(kafka_env)
    stop = asyncio.Event()
    running = asyncio.create_task(serve(settings, stop))
    try:
        yield settings
    finally:
        stop.set()
        await asyncio.wait_for(running, 30)


def new_task() -> str:
    return f"wh-{uuid.uuid4().hex[:12]}"


async def test_a_failing_receiver_that_recovers_gets_the_delivery_once_with_one_id(
    service: Settings, receiver: Receiver, publish_status: PublishStatus, kafka_env: dict[str, str]
) -> None:
    task = new_task()
    url = receiver.url(f"/{task}", "fail", "fail", "ok")
    await publish_status(task, 1, TaskState.RUNNING, url, ["completed"], attempt="a1")
    await publish_status(task, 2, TaskState.SUCCESS, url, ["completed"], attempt="a1")
    await until(lambda: len(receiver.delivered(f"/{task}")) == 1, "the delivery")
    await asyncio.sleep(1.5)  # no further attempt follows a delivered one
    calls = receiver.calls[f"/{task}"]
    assert [c.attempt for c in calls] == [1, 2, 3]
    assert len({c.delivery_id for c in calls}) == 1 and len({c.body for c in calls}) == 1
    for call in calls:
        verify_signature(SECRET, call.headers, call.body)
    payload = WebhookPayload.model_validate_json(calls[0].body)
    assert (payload.event, payload.task_id, payload.status.status) == ("completed", task, TaskState.SUCCESS)
    assert payload.delivery_id == calls[0].delivery_id
    await until_reported(kafka_env, task, "delivered")
    states = [(r.state, r.attempts) for r in await reports(kafka_env, task)]
    assert states == [("retrying", 1), ("retrying", 2), ("delivered", 3)]


async def until_reported(kafka_env: dict[str, str], task: str, state: str) -> None:
    for _ in range(100):
        if any(r.state == state for r in await reports(kafka_env, task)):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"no {state} report for {task}: {await reports(kafka_env, task)}")


async def test_a_slow_receiver_times_out_and_is_retried(
    service: Settings, receiver: Receiver, publish_status: PublishStatus, kafka_env: dict[str, str]
) -> None:
    task = new_task()
    url = receiver.url(f"/{task}", 3.0, "ok")
    await publish_status(task, 1, TaskState.CANCELLED, url, ["completed"])
    await until(lambda: len(receiver.delivered(f"/{task}")) == 1, "the retry")
    assert [c.attempt for c in receiver.calls[f"/{task}"]] == [1, 2]
    await until_reported(kafka_env, task, "delivered")
    first = (await reports(kafka_env, task))[0]
    assert (first.state, first.last_error) == ("retrying", "no answer within 1.0 s")


async def test_only_the_events_asked_for_are_delivered_in_order(
    service: Settings, receiver: Receiver, publish_status: PublishStatus
) -> None:
    picky, everything = new_task(), new_task()
    for task, events in ((picky, ["progress", "completed"]), (everything, ["completed"])):
        url = receiver.url(f"/{task}")
        await publish_status(task, 1, TaskState.PENDING, url, events)
        await publish_status(task, 2, TaskState.RUNNING, url, events, attempt="a1")
        for version, progress in ((3, 0.25), (4, 0.5)):
            await publish_status(
                task, version, TaskState.RUNNING, url, events, attempt="a1", stage=Stage.DIFFUSION, progress=progress
            )
        await publish_status(task, 5, TaskState.SUCCESS, url, events, attempt="a1", progress=1.0)
    await until(lambda: len(receiver.calls[f"/{picky}"]) == 3 and len(receiver.calls[f"/{everything}"]) == 1, "both")
    await asyncio.sleep(1.0)
    bodies = [WebhookPayload.model_validate_json(c.body) for c in receiver.calls[f"/{picky}"]]
    assert [(b.event, b.status.progress) for b in bodies] == [("progress", 0.25), ("progress", 0.5), ("completed", 1.0)]
    assert [c.event for c in receiver.calls[f"/{everything}"]] == ["completed"]


async def test_a_failing_progress_delivery_is_not_retried(
    service: Settings, receiver: Receiver, publish_status: PublishStatus, kafka_env: dict[str, str]
) -> None:
    task = new_task()
    url = receiver.url(f"/{task}", "fail")
    await publish_status(task, 1, TaskState.RUNNING, url, ["progress"], attempt="a1", stage=Stage.ENCODING)
    await until(lambda: len(receiver.calls[f"/{task}"]) == 1, "the attempt")
    await asyncio.sleep(1.5)
    assert len(receiver.calls[f"/{task}"]) == 1
    assert await reports(kafka_env, task) == []


async def test_private_targets_are_refused_at_delivery_unless_allowed(
    kafka_env: dict[str, str], receiver: Receiver
) -> None:
    sender = Sender(webhook_settings(kafka_env, webhook_allow_private=False))
    await sender.start()
    try:
        outcome = await sender.post(receiver.url("/private"), b"{}", {})
    finally:
        await sender.close()
    assert outcome.error is not None and outcome.error.startswith("refused target: 127.0.0.1 is a loopback address")
    assert receiver.calls["/private"] == []
    with pytest.raises(OSError, match="localhost resolves to"):
        await CheckingResolver(allow_private=False).resolve("localhost", 80)
    assert await CheckingResolver(allow_private=True).resolve("localhost", 80)


async def test_an_error_answer_is_read_only_up_to_the_cap(kafka_env: dict[str, str], receiver: Receiver) -> None:
    sender = Sender(webhook_settings(kafka_env))
    await sender.start()
    try:
        outcome = await sender.post(receiver.url("/broken", "fail"), b"{}", {})
    finally:
        await sender.close()
    assert outcome.status_code == 500 and outcome.error is not None
    assert outcome.error.startswith("HTTP 500: broken broken") and len(outcome.error) < 400
