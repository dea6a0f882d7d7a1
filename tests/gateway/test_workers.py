"""Heartbeats on the workers topic → `GET /workers` and `/readyz`; the backlog reader's depth and drain rate."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import OffsetAndMetadata

from acefarm.infra.settings import Settings
from acefarm.runtime.heartbeat import Heartbeat
from acefarm.runtime.identity import WorkerIdentity
from gateway.backlog import Backlog, Queue


async def wait_until(check: Callable[[], Any], timeout_s: float = 20.0) -> Any:
    async with asyncio.timeout(timeout_s):
        while not (result := await check()):  # noqa: ASYNC110 - polling HTTP
            await asyncio.sleep(0.1)
        return result


async def test_heartbeat_lists_the_worker_until_it_stops(client: httpx.AsyncClient, kafka_env: dict[str, str]) -> None:
    settings = Settings(**{k.lower(): v for k, v in kafka_env.items()}, heartbeat_interval_s=0.5)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_env["KAFKA_BOOTSTRAP_SERVERS"], acks="all")
    await producer.start()
    name = f"test-worker-{uuid.uuid4().hex[:8]}"
    identity = WorkerIdentity(
        worker=name, service="gpu-consumer", topic="t", group_id="g", checkpoint="tiny", device="cpu"
    )
    beat = Heartbeat.of(producer, settings, identity)

    async def listed() -> dict[str, Any] | None:
        body = (await client.get("/workers")).json()
        return next((w for w in body["workers"] if w["worker"] == name), None)

    try:
        beat.start()
        seen = await wait_until(listed)
        assert (seen["kind"], seen["model"], seen["device"], seen["joined"]) == ("gpu-consumer", "tiny", "cpu", False)
        with beat.working_on("task-1"):
            beat.update(joined=True)
            now = await wait_until(lambda: _field(listed, "current_task", "task-1"))
            assert now["joined"] is True
        ready = (await client.get("/readyz")).json()
        assert ready["workers_alive"]["gpu-consumer"] >= 1
        assert "does not require" in ready["workers_note"]
        await beat.stop()  # the tombstone drops it at once
        await wait_until(lambda: _absent(listed))
    finally:
        await producer.stop()


async def _field(listed: Callable[[], Any], name: str, expected: object) -> dict[str, Any] | None:
    worker = await listed()
    return worker if worker is not None and worker[name] == expected else None


async def _absent(listed: Callable[[], Any]) -> bool:
    return await listed() is None


async def test_backlog_depth_and_drain_rate(kafka_env: dict[str, str]) -> None:
    bootstrap = kafka_env["KAFKA_BOOTSTRAP_SERVERS"]
    topic, group = f"backlog-{uuid.uuid4().hex[:8]}", f"group-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 2, 1)])
    await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    for i in range(6):
        await producer.send_and_wait(topic, b"job", partition=i % 2)
    await producer.stop()
    backlog = Backlog(Settings(**{k.lower(): v for k, v in kafka_env.items()}), (Queue(topic, group),))
    await backlog.start()
    try:
        await backlog.refresh()
        assert backlog.depth(topic, group) == 6  # nothing committed yet: all of it waits
        committer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
        await committer.start()
        committer.assign([TopicPartition(topic, 0)])
        await committer.commit({TopicPartition(topic, 0): OffsetAndMetadata(2, "")})
        await committer.stop()
        await asyncio.sleep(0.2)
        await backlog.refresh()
        assert backlog.depth(topic, group) == 4
        rate = backlog.drain_rate(topic, group)
        assert rate is not None and rate > 0
    finally:
        await backlog.stop()
