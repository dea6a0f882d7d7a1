"""The farm-wide queue limit on real parts: a gateway on a broker of its own, no scheduler and no GPU consumer,
so every accepted job stays queued. Once the gateway's background backlog reader (log end minus the worker
groups' committed offsets) sees more than `MAX_QUEUED_JOBS`, a new job is refused with 503, a `Retry-After`
and `extra.limit == "backlog"`, and nothing is published for it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from acefarm.devtools.broker import EmbeddedBroker
from gateway.submit import task_id_for
from schemas import topics
from tests.conftest import FAST_GROUP_ENV
from tests.gateway.conftest import events_for, gateway_settings, serve

MAX_QUEUED = 3


@pytest.fixture(scope="module")
def own_broker() -> Iterator[EmbeddedBroker]:
    """A broker of this module's own: the queue holds only this test's jobs."""
    with EmbeddedBroker() as running:
        yield running


async def test_a_full_farm_queue_refuses_new_jobs_with_503_and_retry_after(
    own_broker: EmbeddedBroker, tmp_path: Path
) -> None:
    env = {"KAFKA_BOOTSTRAP_SERVERS": own_broker.bootstrap_servers, **FAST_GROUP_ENV}
    settings = gateway_settings(env, tmp_path / "data", max_queued_jobs=MAX_QUEUED, backlog_refresh_s=1.0)
    gateway = serve(settings)
    url = next(gateway)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            accepted = []
            for _ in range(MAX_QUEUED + 1):  # one over the limit: the queue now holds more than MAX_QUEUED
                response = await client.post("/generate", json={"prompt": "queued", "duration": 2})
                assert response.status_code == 202, response.text
                accepted.append(response.json()["task_id"])

            deadline = time.monotonic() + 30  # the reader refreshes every second
            for attempt in range(1000):
                key = f"one-too-many-{attempt}"
                refused = await client.post(
                    "/generate", json={"prompt": "one too many", "duration": 2}, headers={"Idempotency-Key": key}
                )
                if refused.status_code == 503 or time.monotonic() > deadline:
                    break
                assert refused.status_code == 202, refused.text
                accepted.append(refused.json()["task_id"])
                await asyncio.sleep(0.5)

        assert refused.status_code == 503, refused.text
        body = refused.json()
        assert body["extra"]["limit"] == "backlog"
        assert int(refused.headers["Retry-After"]) >= 1
        bootstrap = own_broker.bootstrap_servers
        assert await events_for(bootstrap, topics.GENERATION_REQUESTS, task_id_for("anonymous", key)) == []
        for task_id in accepted:
            assert len(await events_for(bootstrap, topics.GENERATION_REQUESTS, task_id)) == 1
    finally:
        gateway.close()
