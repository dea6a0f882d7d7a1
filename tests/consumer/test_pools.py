"""Two model pools on two tiny ACE-Step checkpoints (turbo and base), each a consumer process on its own
ready topic, a scheduler admitting each pool's intake into its ready topic, and a gateway that routes by
`model` and task type over the pools the consumers announce on their heartbeats."""

from __future__ import annotations

import json
from base64 import b64encode
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.consumer.conftest import CONSUMER_ARGS, EventRecorder, wait_for_log
from tests.gateway.conftest import gateway_settings, serve, tone
from tests.support.processes import Service, start_service

pytestmark = pytest.mark.timeout(300)

POOLS = {"DEFAULT_MODEL": "turbo", "MODEL_POOLS": "base"}


@pytest.fixture(scope="module")
def pool_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pools-data")


@pytest.fixture(scope="module")
def consumers(
    topics_ready: None,
    kafka_env: dict[str, str],
    tiny_model_dir: Path,
    pool_data: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Service]]:
    """A consumer serving the default pool (turbo) and one serving the named pool `base`."""
    from acefarm.model.tiny import make_tiny

    turbo_dir = make_tiny(tmp_path_factory.mktemp("models") / "tiny-turbo", turbo=True, audio_tokenizer=False)
    logs = tmp_path_factory.mktemp("pool-logs")
    common = {
        **kafka_env,
        **POOLS,
        "ENGINE": "acestep",
        "DEVICE": "cpu",
        "VAE_TILING": "false",
        "STORAGE_BACKEND": "local",
        "OUTPUT_DIR": str(pool_data),
    }
    services = {
        "turbo": start_service(
            "turbo", CONSUMER_ARGS, {**common, "MODEL_PATH": str(turbo_dir), "WORKER_ID": "turbo-0"}, logs
        ),
        "base": start_service(
            "base",
            CONSUMER_ARGS,
            {**common, "MODEL_PATH": str(tiny_model_dir), "MODEL_NAME": "base", "WORKER_ID": "base-0"},
            logs,
        ),
    }
    services["scheduler"] = start_service("scheduler", ["-m", "acefarm", "scheduler"], common, logs)
    try:
        for service in services.values():
            wait_for_log(service, "kafka.group_joined", timeout_s=120)
        yield services
    finally:
        for service in services.values():
            service.stop()


@pytest.fixture(scope="module")
def gateway(kafka_env: dict[str, str], pool_data: Path) -> Iterator[str]:
    yield from serve(gateway_settings(kafka_env, pool_data, default_model="turbo", model_pools="base"))


def ready_line(service: Service) -> dict[str, object]:
    line = next(line for line in service.log().splitlines() if '"consumer.ready"' in line)
    record: dict[str, object] = json.loads(line)
    return record


def test_each_consumer_announces_its_pool_topic_and_task_types(consumers: dict[str, Service]) -> None:
    turbo, base = ready_line(consumers["turbo"]), ready_line(consumers["base"])
    assert (turbo["pool"], turbo["topic"], turbo["group"]) == ("turbo", "acefarm.generation.ready", "gpu-workers")
    assert "extract" not in turbo["task_types"]  # type: ignore[operator]
    assert (base["pool"], base["topic"], base["group"]) == ("base", "acefarm.generation.ready.base", "gpu-workers.base")
    assert "extract" in base["task_types"] and base["device"] == "cpu"  # type: ignore[operator]


@pytest.mark.parametrize(
    ("extra", "pool"),
    [
        ({}, "turbo"),
        ({"model": "base"}, "base"),
        ({"task_type": "extract", "track_name": "vocals"}, "base"),
        ({"model": "turbo", "task_type": "cover"}, "turbo"),
    ],
)
async def test_requests_run_on_their_pools_model(
    consumers: dict[str, Service], gateway: str, recorder: EventRecorder, extra: dict[str, str], pool: str
) -> None:
    body: dict[str, object] = {"prompt": "a calm sine", "duration": 1.2, "inference_steps": 2, "seed": 3, **extra}
    if "task_type" in extra:  # the tiny turbo checkpoint has no audio tokenizer: cover from a reference only
        role = "reference_audio" if extra["task_type"] == "cover" else "src_audio"
        body[role] = b64encode(tone(seconds=1.0)).decode()
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as http:
        response = await http.post("/generate", json=body)
    assert response.status_code == 202, response.text
    task_id = response.json()["task_id"]
    final = await recorder.final(task_id, timeout_s=120)
    assert final.type == "task.succeeded", recorder.by_task[task_id]
    assert recorder.by_task[task_id][0].worker.startswith(f"{pool}-0")
    model = final.used.model
    assert (model.name, model.engine) == (pool, "acestep")
    assert model.id == ("tiny-turbo" if pool == "turbo" else "tiny")
    timings = final.used.timings
    assert timings.encode_s is not None and timings.diffusion_s is not None and timings.decode_s is not None


async def test_a_stem_task_for_the_turbo_pool_is_refused_with_what_is_available(
    consumers: dict[str, Service], gateway: str
) -> None:
    body = {"prompt": "x", "duration": 1.2, "model": "turbo", "task_type": "extract", "track_name": "vocals"}
    body["src_audio"] = b64encode(tone(seconds=1.0)).decode()
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as http:
        response = await http.post("/generate", json=body)
        models = (await http.get("/models")).json()
    assert response.status_code == 422
    assert "'extract' is not available with the model 'turbo' (use model 'base')" in response.json()["detail"]
    assert [m["name"] for m in models["models"]] == ["turbo", "base"]  # the pools the heartbeats announce
    assert "extract" in next(m for m in models["models"] if m["name"] == "base")["task_types"]
