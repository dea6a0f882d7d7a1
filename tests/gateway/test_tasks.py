"""Status, cancel and the SSE stream, driven by status snapshots on the status topic (the `streams` contract)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from schemas import topics
from schemas.events import CancelRequested
from schemas.status import Stage, TaskState
from tests.gateway.conftest import KEEPALIVE_S, PublishStatus, events_for, result_file
from tests.support.ids import new_task_id


@dataclass
class Sse:
    """One server-sent event (or a comment)."""

    id: str | None = None
    event: str | None = None
    data: dict[str, Any] | None = None
    comments: list[str] = field(default_factory=list)


async def sse_events(response: httpx.Response) -> AsyncIterator[Sse]:
    """Parse a text/event-stream body into events; comments come as events without data."""
    current = Sse()
    async for line in response.aiter_lines():
        if line == "":
            if current.data is not None or current.comments:
                yield current
            current = Sse()
        elif line.startswith(":"):
            current.comments.append(line[1:].strip())
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "id":
                current.id = value
            elif name == "event":
                current.event = value
            elif name == "data":
                current.data = json.loads(value)


async def wait_status(client: httpx.AsyncClient, task_id: str, version: int, timeout_s: float = 20) -> dict[str, Any]:
    """Poll GET /status until the task reaches `version`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = await client.get(f"/status/{task_id}")
        if response.status_code == 200 and response.json()["version"] >= version:
            return dict(response.json())
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{task_id} never reached version {version}")


async def test_status_from_snapshots_with_file_urls(
    client: httpx.AsyncClient, publish_status: PublishStatus, data_dir: Path
) -> None:
    task_id = new_task_id()
    files = [
        await result_file(data_dir, f"outputs/{task_id}/take-{n}.flac", b"fLaC" + bytes(10), "audio/flac")
        for n in range(2)
    ]
    await publish_status(task_id, 1, TaskState.PENDING)
    await publish_status(task_id, 2, TaskState.RUNNING, progress=0.5, stage=Stage.DIFFUSION, step=4, total_steps=8)
    running = await wait_status(client, task_id, 2)
    assert (running["status"], running["progress"], running["stage"], running["step"]) == (
        "running",
        0.5,
        "diffusion",
        4,
    )
    await publish_status(task_id, 3, TaskState.SUCCESS, progress=1.0, files=files)
    done = await wait_status(client, task_id, 3)
    assert done["status"] == "success"
    paths = [url.partition("?")[0] for url in done["file_urls"]]
    assert paths == [f"/files/outputs/{task_id}/take-0.flac", f"/files/outputs/{task_id}/take-1.flac"]
    assert all("sig=" in url and "exp=" in url for url in done["file_urls"]), "file links are signed"
    assert done["file_url"] == done["file_urls"][0]
    assert (await client.get(done["file_url"])).content == b"fLaC" + bytes(10)
    await publish_status(task_id, 2, TaskState.RUNNING)  # an older snapshot never wins
    await asyncio.sleep(0.5)
    assert (await client.get(f"/status/{task_id}")).json()["version"] == 3


async def test_unknown_task_is_404_everywhere(client: httpx.AsyncClient) -> None:
    for method, path in [("GET", "/status/nope"), ("DELETE", "/tasks/nope"), ("GET", "/tasks/nope/events")]:
        response = await client.request(method, path)
        assert response.status_code == 404, (method, path)
        assert "no task has the id 'nope'" in response.json()["detail"]


async def test_sse_sends_current_state_then_changes_and_closes_on_final(
    client: httpx.AsyncClient, publish_status: PublishStatus
) -> None:
    task_id = new_task_id()
    await publish_status(task_id, 1, TaskState.PENDING)
    await wait_status(client, task_id, 1)

    async def drive() -> None:
        await asyncio.sleep(0.3)
        for version, progress in ((2, 0.0), (3, 0.25), (4, 0.75)):
            await publish_status(task_id, version, TaskState.RUNNING, progress=progress, stage=Stage.DIFFUSION)
            await asyncio.sleep(0.1)
        await publish_status(task_id, 5, TaskState.FAILED, error="CUDA out of memory")

    driver = asyncio.create_task(drive())
    received: list[Sse] = []
    async with asyncio.timeout(20), client.stream("GET", f"/tasks/{task_id}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        received = [e async for e in sse_events(response) if e.data is not None]
    await driver
    assert [e.id for e in received] == ["1", "2", "3", "4", "5"]
    assert [e.event for e in received] == ["pending", "running", "running", "running", "failed"]
    assert [e.data["progress"] for e in received if e.data] == [0.0, 0.0, 0.25, 0.75, 0.0]
    assert received[-1].data == (await client.get(f"/status/{task_id}")).json()
    assert received[-1].data and received[-1].data["error"] == "CUDA out of memory"


async def test_sse_skips_a_snapshot_that_changes_nothing_visible(
    client: httpx.AsyncClient, publish_status: PublishStatus
) -> None:
    task_id = new_task_id()
    created = datetime.now(UTC)
    await publish_status(task_id, 1, TaskState.PENDING, created_at=created)
    await wait_status(client, task_id, 1)

    async def drive() -> None:
        await asyncio.sleep(0.3)
        await publish_status(task_id, 2, TaskState.PENDING, created_at=created)  # same state, newer version
        await asyncio.sleep(0.1)
        await publish_status(task_id, 3, TaskState.RUNNING, progress=0.5, created_at=created)
        await asyncio.sleep(0.1)
        await publish_status(task_id, 4, TaskState.SUCCESS, progress=1.0, created_at=created)

    driver = asyncio.create_task(drive())
    async with asyncio.timeout(20), client.stream("GET", f"/tasks/{task_id}/events") as response:
        received = [e async for e in sse_events(response) if e.data is not None]
    await driver
    assert [(e.id, e.event) for e in received] == [("1", "pending"), ("3", "running"), ("4", "success")]


async def test_sse_last_event_id_replays_only_newer(client: httpx.AsyncClient, publish_status: PublishStatus) -> None:
    task_id = new_task_id()
    for version, state in ((1, TaskState.PENDING), (2, TaskState.RUNNING), (3, TaskState.RUNNING)):
        await publish_status(task_id, version, state, progress=version / 10)
    await publish_status(task_id, 4, TaskState.CANCELLED)
    await wait_status(client, task_id, 4)

    async def follow(last_event_id: str | None) -> list[str | None]:
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        async with asyncio.timeout(10), client.stream("GET", f"/tasks/{task_id}/events", headers=headers) as response:
            assert response.status_code == 200
            return [e.id async for e in sse_events(response) if e.data is not None]

    assert await follow(None) == ["4"]  # a finished task: its final state, then the stream closes
    assert await follow("1") == ["2", "3", "4"]
    assert await follow("3") == ["4"]
    assert await follow("4") == []  # the client already has the final state
    assert await follow("garbage") == ["4"]


async def test_sse_keep_alive_while_idle(client: httpx.AsyncClient, publish_status: PublishStatus) -> None:
    task_id = new_task_id()
    await publish_status(task_id, 1, TaskState.RUNNING)
    await wait_status(client, task_id, 1)
    started = time.monotonic()
    comments: list[str] = []
    async with client.stream("GET", f"/tasks/{task_id}/events") as response:
        async for event in sse_events(response):
            comments += event.comments
            if len(comments) >= 2:
                break
    assert comments == ["keep-alive", "keep-alive"]
    assert time.monotonic() - started >= 2 * KEEPALIVE_S * 0.9


async def test_sse_right_after_submit_follows_the_job(client: httpx.AsyncClient, publish_status: PublishStatus) -> None:
    task_id = (await client.post("/generate", json={"prompt": "x", "duration": 5})).json()["task_id"]

    async def drive() -> None:
        await asyncio.sleep(0.3)
        await publish_status(task_id, 1, TaskState.PENDING)
        await publish_status(task_id, 2, TaskState.SUCCESS, progress=1.0)

    driver = asyncio.create_task(drive())
    async with asyncio.timeout(20), client.stream("GET", f"/tasks/{task_id}/events") as response:
        states = [(e.id, e.event) async for e in sse_events(response) if e.data is not None]
    await driver
    assert states[0] in (("0", "pending"), ("1", "pending"))  # the gateway's own pending, or streams' one
    assert states[-1] == ("2", "success")


async def test_cancel_publishes_cancel_requested(
    client: httpx.AsyncClient, publish_status: PublishStatus, kafka_env: dict[str, str]
) -> None:
    task_id = new_task_id()
    await publish_status(task_id, 2, TaskState.RUNNING, progress=0.3)
    await wait_status(client, task_id, 2)
    response = await client.delete(f"/tasks/{task_id}")
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "running"
    [(key, event)] = await events_for(kafka_env["KAFKA_BOOTSTRAP_SERVERS"], topics.TASK_CONTROL, task_id)
    assert key == task_id.encode()
    assert isinstance(event, CancelRequested)

    await publish_status(task_id, 3, TaskState.CANCELLED)
    await wait_status(client, task_id, 3)
    again = await client.delete(f"/tasks/{task_id}")
    assert again.status_code == 204  # final now: the second DELETE cleans up instead
    assert len(await events_for(kafka_env["KAFKA_BOOTSTRAP_SERVERS"], topics.TASK_CONTROL, task_id)) == 1


@pytest.mark.parametrize("state", [TaskState.SUCCESS, TaskState.FAILED])
async def test_delete_of_a_final_task_deletes_its_files_and_keeps_its_status(
    client: httpx.AsyncClient, publish_status: PublishStatus, data_dir: Path, state: TaskState
) -> None:
    task_id, other = new_task_id(), new_task_id()
    take = await result_file(data_dir, f"outputs/{task_id}/take-0.wav", b"RIFF-result", "audio/wav")
    await result_file(data_dir, f"inputs/{task_id}/source.wav", b"RIFF-input", "audio/wav")
    await result_file(data_dir, f"outputs/{other}/take-0.wav", b"RIFF-other", "audio/wav")
    await publish_status(task_id, 1, state, files=[take])
    await wait_status(client, task_id, 1)
    assert (await client.get(f"/files/{take.key}")).status_code == 200

    response = await client.delete(f"/tasks/{task_id}")
    assert response.status_code == 204 and response.content == b""
    assert not (data_dir / "outputs" / task_id).exists() and not (data_dir / "inputs" / task_id).exists()
    assert (data_dir / "outputs" / other / "take-0.wav").read_bytes() == b"RIFF-other"
    assert (await client.get(f"/files/{take.key}")).status_code == 404
    assert (await client.get(f"/status/{task_id}")).json()["status"] == state.value
    assert (await client.delete(f"/tasks/{task_id}")).status_code == 204  # idempotent


async def test_a_tombstone_on_the_status_topic_forgets_the_task(
    client: httpx.AsyncClient, publish_status: PublishStatus, raw_producer: AIOKafkaProducer
) -> None:
    """streams publishes a tombstone when a finished task's status expires: the gateway then answers 404."""
    task_id = new_task_id()
    await publish_status(task_id, 1, TaskState.SUCCESS)
    await wait_status(client, task_id, 1)
    await raw_producer.send_and_wait(topics.TASK_STATUS, None, key=task_id.encode())
    deadline = time.monotonic() + 20
    while (await client.get(f"/status/{task_id}")).status_code != 404:
        assert time.monotonic() < deadline, "the expired task is still served"
        await asyncio.sleep(0.05)
