"""The gateway's /metrics, its request metrics and SSE gauge, and the trace context it puts on Kafka records."""

from __future__ import annotations

import asyncio

import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition

from schemas import topics
from schemas.status import TaskState
from tests.gateway.conftest import PublishStatus
from tests.support.ids import new_task_id
from tests.support.scrape import scrape, value

GOOD = {"prompt": "warm lofi piano", "duration": 12.5}
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


async def test_metrics_count_a_submit(gateway_url: str, client: httpx.AsyncClient) -> None:
    before = await asyncio.to_thread(scrape, f"{gateway_url}/metrics")
    response = await client.post("/generate", json=GOOD)
    assert response.status_code == 202
    bad = await client.post("/generate", json={**GOOD, "duration": 0.1})
    assert bad.status_code == 400
    after = await asyncio.to_thread(scrape, f"{gateway_url}/metrics")

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    route = {"route": "/generate", "method": "POST"}
    assert delta("acefarm_http_requests_total", **route, status="202") == 1
    assert delta("acefarm_http_requests_total", **route, status="400") == 1
    assert delta("acefarm_http_request_seconds_count", **route) == 2
    assert delta("acefarm_tasks_submitted_total", kind="generation") == 1
    # Routes are labelled by template, never by raw path.
    await client.get(f"/status/{new_task_id()}")
    templated = await asyncio.to_thread(scrape, f"{gateway_url}/metrics")
    assert value(templated, "acefarm_http_requests_total", route="/status/{task_id}", method="GET", status="404")


async def test_sse_connections_gauge(
    gateway_url: str, client: httpx.AsyncClient, publish_status: PublishStatus
) -> None:
    task_id = new_task_id()
    await publish_status(task_id, 1, TaskState.RUNNING)
    base = value(await asyncio.to_thread(scrape, f"{gateway_url}/metrics"), "acefarm_sse_connections")
    async with asyncio.timeout(20):
        while (await client.get(f"/status/{task_id}")).status_code != 200:  # noqa: ASYNC110 - polling HTTP
            await asyncio.sleep(0.05)
        async with client.stream("GET", f"/tasks/{task_id}/events") as stream:
            assert stream.status_code == 200
            lines = stream.aiter_lines()  # one iterator: a dropped one closes the stream
            assert (await anext(lines)).startswith("id:")
            during = await asyncio.to_thread(scrape, f"{gateway_url}/metrics")
            assert value(during, "acefarm_sse_connections") == base + 1
    await asyncio.sleep(0.2)
    after = await asyncio.to_thread(scrape, f"{gateway_url}/metrics")
    assert value(after, "acefarm_sse_connections") == base


async def test_traceparent_travels_into_the_request_record(
    client: httpx.AsyncClient, kafka_env: dict[str, str]
) -> None:
    response = await client.post("/generate", json=GOOD, headers={"traceparent": TRACEPARENT})
    task_id = response.json()["task_id"]
    headers = await record_headers(kafka_env["KAFKA_BOOTSTRAP_SERVERS"], topics.GENERATION_REQUESTS, task_id)
    traceparent = headers["traceparent"].decode()
    assert traceparent.split("-")[1] == TRACE_ID


async def record_headers(bootstrap: str, topic: str, task_id: str) -> dict[str, bytes]:
    """The headers of the record keyed by `task_id` on `topic`."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        async with asyncio.timeout(20):
            while True:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for record in records:
                        if record.key == task_id.encode():
                            return dict(record.headers)
    finally:
        await consumer.stop()
