"""Probes, API docs, the web page, and the gateway as its own process."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from acefarm.devtools.broker import EmbeddedBroker, free_port
from acefarm.infra.settings import Settings
from gateway.app import max_body_bytes
from schemas.status import TaskState
from tests.conftest import FAST_GROUP_ENV
from tests.gateway.conftest import PublishStatus, gateway_settings, serve
from tests.support.ids import new_task_id
from tests.support.processes import start_service, wait_until_ready

STATIC_DIR = Path(__file__).resolve().parents[2] / "gateway" / "static"
STATIC_ASSETS = sorted(p.name for p in STATIC_DIR.iterdir() if p.is_file() and p.name != "index.html")


async def test_probes(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["kafka"] is True and ready.json()["status_view_caught_up"] is True


async def test_openapi_and_swagger_ui(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/schema/openapi.json")).json()
    for path in ("/generate", "/uploads", "/status/{task_id}", "/tasks/{task_id}", "/tasks/{task_id}/events"):
        assert path in spec["paths"], path
    generate = spec["paths"]["/generate"]["post"]
    assert "Idempotency-Key" in [p["name"] for p in generate["parameters"]]
    assert {"202", "400", "413", "415"} <= set(generate["responses"])
    assert "GenerateRequest" in spec["components"]["schemas"]
    docs = await client.get("/docs")
    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
    assert "SwaggerUIBundle" in docs.text and '"/generate"' in docs.text


async def test_web_page_is_served(client: httpx.AsyncClient) -> None:
    page = await client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    for name in STATIC_ASSETS:
        assert (await client.get(f"/static/{name}")).status_code == 200, name


async def test_page_config_is_public_and_has_no_dashboard_by_default(client: httpx.AsyncClient) -> None:
    answer = await client.get("/page-config")
    assert answer.status_code == 200
    assert answer.json() == {"dashboard_url": None}


@pytest.mark.parametrize("url", ["javascript:alert(1)", "localhost:3000", "ftp://grafana"])
def test_a_dashboard_url_must_be_http(url: str) -> None:
    with pytest.raises(ValidationError, match="DASHBOARD_URL"):
        Settings(dashboard_url=url)
    assert Settings(dashboard_url="https://grafana.example.com/d/acefarm-farm").dashboard_url.startswith("https://")


def test_readyz_is_503_once_kafka_stops(tmp_path: Path) -> None:
    with EmbeddedBroker() as broker:
        env = {"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers, **FAST_GROUP_ENV}
        running = serve(gateway_settings(env, tmp_path / "data"))
        url = next(running)
        try:
            assert httpx.get(f"{url}/readyz").status_code == 200
            broker.stop()
            deadline = time.monotonic() + 30
            while (answer := httpx.get(f"{url}/readyz", timeout=10)).status_code == 200:
                assert time.monotonic() < deadline, "still ready without Kafka"
                time.sleep(0.2)
            assert answer.status_code == 503
            assert answer.json()["kafka"] is False
            assert httpx.get(f"{url}/healthz").status_code == 200
        finally:
            running.close()


def test_acefarm_gateway_command_serves_and_stops_cleanly(kafka_env: dict[str, str], tmp_path: Path) -> None:
    port = free_port()
    env = {**kafka_env, "OUTPUT_DIR": str(tmp_path / "data")}
    argv = ["-m", "acefarm", "gateway", "--host", "127.0.0.1", "--port", str(port)]
    service = start_service("gateway", argv, env, tmp_path)
    try:
        wait_until_ready(f"http://127.0.0.1:{port}/readyz", service, timeout_s=60)
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz").json()
        assert ready["auth_mode"] == "keys" and ready["keys_caught_up"], "keys are on by default outside `acefarm dev`"
        refused = httpx.post(f"http://127.0.0.1:{port}/generate", json={"prompt": "x", "duration": 2})
        assert refused.status_code == 401 and refused.headers["WWW-Authenticate"].startswith("Bearer")
    finally:
        service.stop()
    # uvicorn re-raises the SIGTERM it handled once shutdown is complete
    assert service.process.returncode in (0, -signal.SIGTERM), service.log()[-3000:]
    assert "gateway.stopped" in service.log()
    assert "Application shutdown complete" in service.log()


async def test_a_new_gateway_rebuilds_statuses_from_the_topic(
    kafka_env: dict[str, str], tmp_path: Path, publish_status: PublishStatus
) -> None:
    task_id = new_task_id()
    await publish_status(task_id, 7, TaskState.SUCCESS, progress=1.0)
    running = serve(gateway_settings(kafka_env, tmp_path / "data"))
    url = await asyncio.to_thread(next, running)
    try:
        async with httpx.AsyncClient(base_url=url) as client:
            status = await client.get(f"/status/{task_id}")  # ready means caught up: no wait needed
            assert status.status_code == 200
            assert (status.json()["status"], status.json()["version"]) == ("success", 7)
    finally:
        await asyncio.to_thread(running.close)


async def test_oversized_body_is_413(client: httpx.AsyncClient) -> None:
    limit = max_body_bytes(gateway_settings({}, Path("unused")))
    body = b'{"prompt": "' + b"a" * limit + b'", "duration": 5}'
    response = await client.post("/generate", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["detail"].startswith("body: the request is too large")
