"""A real consumer process seen from outside: its metrics port, its heartbeat in `GET /workers`, and the
trace context from the HTTP request reaching its log lines."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest

from acefarm.devtools.broker import free_port
from tests.consumer.conftest import CONSUMER_ARGS, EventRecorder, consumer_env, wait_for_log
from tests.gateway.conftest import gateway_settings, serve
from tests.support.processes import start_service
from tests.support.scrape import scrape, value

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"


def workers(url: str) -> list[dict[str, object]]:
    return [w for w in httpx.get(f"{url}/workers", timeout=10).json()["workers"] if w["kind"] == "gpu-consumer"]


def wait_for(check: object, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.2)


@pytest.mark.timeout(180)
async def test_metrics_heartbeat_and_trace_of_a_real_job(
    topics_ready: None,
    kafka_env: dict[str, str],
    recorder: EventRecorder,
    tmp_path: Path,
) -> None:
    gateway = serve(gateway_settings(kafka_env, tmp_path / "gateway", heartbeat_interval_s=0.5))
    url = next(gateway)
    port = free_port()
    env = consumer_env(kafka_env, tmp_path / "data", METRICS_PORT=str(port), HEARTBEAT_INTERVAL_S="0.5")
    service = start_service("gpu-consumer", CONSUMER_ARGS, env, tmp_path / "logs")
    # The gateway publishes to the intake topic; the scheduler admits the job (trace headers and all) to the
    # ready topic the consumer reads.
    # (without METRICS_PORT: the port is the consumer's to serve)
    scheduler_env = {name: value for name, value in env.items() if name != "METRICS_PORT"}
    scheduler = start_service("scheduler", ["-m", "acefarm", "scheduler"], scheduler_env, tmp_path / "logs")
    try:
        await asyncio.to_thread(wait_for_log, service, "kafka.group_joined")
        name = json.loads(next(line for line in service.log().splitlines() if "consumer.ready" in line))["worker"]
        await asyncio.to_thread(wait_for, lambda: any(w["worker"] == name and w["joined"] for w in workers(url)))

        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            response = await client.post(
                "/generate", json={"prompt": "a calm sine", "duration": 1.5}, headers={"traceparent": TRACEPARENT}
            )
        assert response.status_code == 202, response.text
        task_id = response.json()["task_id"]
        final = await recorder.final(task_id, timeout_s=60)
        assert final.type == "task.succeeded"

        metrics = await asyncio.to_thread(scrape, f"http://127.0.0.1:{port}/metrics")
        assert value(metrics, "acefarm_jobs_total", kind="generation", outcome="succeeded", reason="") >= 1
        assert value(metrics, "acefarm_job_seconds_count", kind="generation", outcome="succeeded") >= 1
        assert value(metrics, "acefarm_stage_seconds_count", stage="queued") >= 1
        assert value(metrics, "acefarm_stage_seconds_count", stage="uploading") >= 1
        assert value(metrics, "acefarm_takes_total") >= 1
        assert value(metrics, "acefarm_audio_seconds_total") >= 1.5
        import torch

        # GPU gauges exist only where CUDA does: absent rather than zero on a CPU machine.
        assert any(key[0].startswith("acefarm_gpu_") for key in metrics) == torch.cuda.is_available()

        lines = [json.loads(line) for line in service.log().splitlines() if line.startswith("{")]
        started = next(line for line in lines if line.get("event") == "job.started" and line.get("task_id") == task_id)
        assert started["trace_id"] == TRACE_ID

        service.stop()
        await asyncio.to_thread(wait_for, lambda: not any(w["worker"] == name for w in workers(url)), 30.0)
    finally:
        service.stop()
        scheduler.stop()
        gateway.close()
