"""`GET /models` and routing to model pools on a gateway configured with three pools, and by the pools alive
workers announce on their heartbeats."""

from __future__ import annotations

import asyncio
from base64 import b64encode
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from acefarm.infra.settings import Settings
from acefarm.runtime.heartbeat import Heartbeat
from acefarm.runtime.identity import WorkerIdentity
from schemas import topics
from tests.gateway.conftest import events_for, gateway_settings, serve, tone

POOLS = {"default_model": "turbo", "model_pools": "base; sft=text2music,cover"}


@pytest.fixture(scope="module")
def pools_url(kafka_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from serve(gateway_settings(kafka_env, tmp_path_factory.mktemp("pools-data"), **POOLS))


@pytest.fixture
async def http(pools_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=pools_url, timeout=30) as client:
        yield client


async def test_models_lists_each_pool_with_its_task_types(http: httpx.AsyncClient) -> None:
    body = (await http.get("/models")).json()
    assert body["default"] == "turbo"
    models = {m["name"]: m for m in body["models"]}
    assert list(models) == ["turbo", "base", "sft"]
    assert models["turbo"]["default"] and "extract" not in models["turbo"]["task_types"]
    assert set(models["base"]["task_types"]) >= {"extract", "lego", "complete", "text2music"}
    assert models["sft"]["task_types"] == ["cover", "text2music"]


async def test_the_single_model_farm_lists_its_default_model(client: httpx.AsyncClient) -> None:
    body = (await client.get("/models")).json()
    assert body["default"] == "default" and [m["name"] for m in body["models"]] == ["default"]


@pytest.mark.parametrize(
    ("extra", "topic"),
    [
        ({}, topics.GENERATION_REQUESTS),
        ({"model": "turbo"}, topics.GENERATION_REQUESTS),
        ({"model": "sft"}, "acefarm.generation.requests.sft"),
        ({"task_type": "extract", "track_name": "vocals"}, "acefarm.generation.requests.base"),
    ],
)
async def test_requests_are_queued_on_their_pools_topic(
    http: httpx.AsyncClient, kafka_env: dict[str, str], extra: dict[str, str], topic: str
) -> None:
    body = {"prompt": "a calm sine", "duration": 2.0, **extra}
    if "task_type" in body:
        body["src_audio"] = b64encode(tone(seconds=0.5)).decode()
    response = await http.post("/generate", json=body)
    assert response.status_code == 202, response.text
    task_id = response.json()["task_id"]
    [(_, event)] = await events_for(kafka_env["KAFKA_BOOTSTRAP_SERVERS"], topic, task_id)
    assert event.task_id == task_id


@pytest.mark.parametrize(
    ("extra", "code", "says"),
    [
        ({"model": "xl"}, 422, "model: no pool serves the model 'xl'; available: 'turbo' ("),
        ({"model": "Base"}, 400, "model: String should match pattern"),
        (
            {"model": "sft", "task_type": "repaint", "repaint_start": 0, "repaint_end": 1},
            422,
            "task_type: 'repaint' is not available with the model 'sft' (use model 'turbo' or 'base')",
        ),
    ],
)
async def test_a_model_nobody_serves_or_a_task_it_cannot_do_is_refused(
    http: httpx.AsyncClient, extra: dict[str, object], code: int, says: str
) -> None:
    body = {"prompt": "a calm sine", "duration": 2.0, "src_audio": b64encode(tone(seconds=0.5)).decode(), **extra}
    response = await http.post("/generate", json=body)
    assert response.status_code == code, response.text
    assert says in response.json()["detail"]


def consumer_of(producer: AIOKafkaProducer, settings: Settings, pool: str, tasks: tuple[str, ...]) -> Heartbeat:
    """The heartbeat of a GPU consumer serving `pool` (the default pool when named `turbo`)."""
    default = pool == "turbo"
    identity = WorkerIdentity(
        worker=f"models-test-{pool}",
        service="gpu-consumer",
        topic=topics.generation_ready(None if default else pool),
        group_id=topics.gpu_workers_group(None if default else pool),
        checkpoint=f"tiny-{pool}",
        device="cpu",
        pool=pool,
        default_pool=default,
        task_types=tasks,
    )
    return Heartbeat.of(producer, settings, identity)


async def listed(http: httpx.AsyncClient, names: list[str]) -> dict[str, Any]:
    """`GET /models` once it lists `names`, in order."""
    async with asyncio.timeout(20):
        while True:
            body: dict[str, Any] = (await http.get("/models")).json()
            if [m["name"] for m in body["models"]] == names:
                return body
            await asyncio.sleep(0.1)


async def test_alive_workers_pools_replace_the_configuration_until_they_stop(
    http: httpx.AsyncClient, kafka_env: dict[str, str]
) -> None:
    settings = Settings(**{k.lower(): v for k, v in kafka_env.items()}, heartbeat_interval_s=0.5)  # type: ignore[arg-type]
    producer = AIOKafkaProducer(bootstrap_servers=kafka_env["KAFKA_BOOTSTRAP_SERVERS"], acks="all")
    await producer.start()
    beats = [
        consumer_of(producer, settings, "turbo", ("text2music",)),
        consumer_of(producer, settings, "solo", ("extract", "text2music")),
    ]
    try:
        for beat in beats:
            beat.start()
        body = await listed(http, ["turbo", "solo"])
        assert body["default"] == "turbo" and body["models"][0]["task_types"] == ["text2music"]
        stem = {"prompt": "a calm sine", "duration": 2.0, "task_type": "extract", "track_name": "vocals"}
        stem["src_audio"] = b64encode(tone(seconds=0.5)).decode()
        response = await http.post("/generate", json=stem)
        assert response.status_code == 202, response.text
        task_id = response.json()["task_id"]
        bootstrap = kafka_env["KAFKA_BOOTSTRAP_SERVERS"]
        [(_, event)] = await events_for(bootstrap, topics.generation_requests("solo"), task_id)
        assert event.params.model == "solo", "the pool chosen by task type travels on the request"  # type: ignore[attr-defined]
        refused = await http.post("/generate", json={"prompt": "x", "duration": 2.0, "model": "base"})
        assert refused.status_code == 422 and "available: 'turbo' (text2music); 'solo'" in refused.json()["detail"]
    finally:
        for beat in beats:
            await beat.stop()
        await producer.stop()
    body = await listed(http, ["turbo", "base", "sft"])
    assert body["default"] == "turbo", "no worker alive: the configured pools again"
