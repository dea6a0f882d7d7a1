"""Read-your-writes across gateway restarts: a task accepted before the restart, not yet folded by
`streams` (not running here), is known to the new gateway from the request topic (docs/reliability.md)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from acefarm.devtools.broker import free_port
from gateway.server import ServerThread
from schemas import topics
from tests.gateway.conftest import events_for, gateway_settings, wait_ready
from tests.gateway.test_tasks import sse_events

GOOD = {"prompt": "warm lofi piano", "duration": 12.5}


def start_gateway(kafka_env: dict[str, str], data_dir: Path) -> tuple[ServerThread, str]:
    """A fresh gateway app on the test broker (no streams service), ready."""
    port = free_port()
    server = ServerThread(gateway_settings(kafka_env, data_dir), port=port).start()
    url = f"http://127.0.0.1:{port}"
    wait_ready(url)
    return server, url


async def test_a_task_accepted_before_a_restart_is_known_and_its_retry_queues_nothing(
    kafka_env: dict[str, str], tmp_path: Path
) -> None:
    headers = {"Idempotency-Key": f"restart-{tmp_path.name}"}
    first, url = start_gateway(kafka_env, tmp_path)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            accepted = await client.post("/generate", json=GOOD, headers=headers)
    finally:
        first.stop()
    assert accepted.status_code == 202, accepted.text
    task_id = accepted.json()["task_id"]

    second, url = start_gateway(kafka_env, tmp_path)  # a new process's view: only Kafka carries the task
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            ready = (await client.get("/readyz")).json()
            assert ready["intake_caught_up"] is True

            status = await client.get(f"/status/{task_id}")
            assert status.status_code == 200, status.text
            assert status.json()["status"] == "pending"

            async with asyncio.timeout(20), client.stream("GET", f"/tasks/{task_id}/events") as stream:
                assert stream.status_code == 200
                first_event = await anext(e async for e in sse_events(stream) if e.data is not None)
                assert first_event.event == "pending" and first_event.data is not None
                assert first_event.data["task_id"] == task_id

            retry = await client.post("/generate", json=GOOD, headers=headers)
            assert retry.status_code == 202, retry.text
            assert retry.json()["task_id"] == task_id and retry.headers["idempotent-replayed"] == "true"
            changed = await client.post("/generate", json={**GOOD, "duration": 20}, headers=headers)
            assert changed.status_code == 422, "the request hash travelled with the request record"

            cancel = await client.delete(f"/tasks/{task_id}")
            assert cancel.status_code == 202, cancel.text
    finally:
        second.stop()
    requests = await events_for(kafka_env["KAFKA_BOOTSTRAP_SERVERS"], topics.GENERATION_REQUESTS, task_id)
    assert len(requests) == 1, "the retry after the restart must not queue the job again"
