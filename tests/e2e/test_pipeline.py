"""End to end on real parts: embedded broker, `acefarm dev` (gateway, streams, webhooks, one GPU consumer running
the real ACE-Step pipeline on the tiny checkpoint), HTTP, SSE, Kafka and stored audio."""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import soundfile as sf
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from acefarm.devtools.broker import EmbeddedBroker, free_port
from acefarm.devtools.devrun import DEV_WEBHOOKS
from schemas import topics
from schemas.events import DeadLetter, GenerationRequested, parse_event
from schemas.generation import GenerationParams
from schemas.webhooks import EVENT_HEADER, verify_signature
from tests.support.processes import start_service, wait_until_ready

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def dev_stack(
    broker: EmbeddedBroker, kafka_env: dict[str, str], tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """`acefarm dev` against the session broker, with the tiny checkpoint; yields the gateway URL."""
    port = free_port()
    work = tmp_path_factory.mktemp("dev")
    env = {**kafka_env, "MODEL_PATH": str(tiny_model_dir), "DEVICE": "cpu", "OUTPUT_DIR": str(work / "data")}
    service = start_service("dev", ["-m", "acefarm", "dev", "--port", str(port), "--no-trainer"], env, work / "logs")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(f"{url}/readyz", service, timeout_s=240)
        yield url
    finally:
        service.stop()


def follow_sse(url: str, task_id: str, timeout_s: float = 180) -> list[dict[str, Any]]:
    """Every status pushed over SSE until the stream closes after the final state."""
    states: list[dict[str, Any]] = []
    with httpx.Client(timeout=timeout_s) as client, client.stream("GET", f"{url}/tasks/{task_id}/events") as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("data:"):
                states.append(json.loads(line[5:]))
    return states


def wait_final(url: str, task_id: str, timeout_s: float = 180) -> dict[str, Any]:
    """Poll GET /status until the task is final."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = httpx.get(f"{url}/status/{task_id}")
        if response.status_code == 200 and response.json()["status"] in ("success", "failed", "cancelled"):
            return dict(response.json())
        time.sleep(0.3)
    raise TimeoutError(f"{task_id} not final after {timeout_s}s")


def fetch_audio(url: str, file_url: str) -> tuple[Any, int, str]:
    """Download a result and decode it: (samples [S, C], sample rate, content type)."""
    response = httpx.get(file_url if file_url.startswith("http") else f"{url}{file_url}", follow_redirects=True)
    assert response.status_code == 200
    data, rate = sf.read(io.BytesIO(response.content), always_2d=True)
    return data, rate, response.headers["content-type"]


def test_submit_follow_sse_and_download(dev_stack: str) -> None:
    body = {"prompt": "warm lofi piano", "lyrics": "[verse]\nla la", "duration": 3.0, "seed": 7, "audio_format": "flac"}
    accepted = httpx.post(f"{dev_stack}/generate", json=body)
    assert accepted.status_code == 202, accepted.text
    task_id = accepted.json()["task_id"]
    assert accepted.json()["status"] == "pending"

    right_after = httpx.get(f"{dev_stack}/status/{task_id}")
    assert right_after.status_code == 200
    assert right_after.json()["status"] in ("pending", "running", "success")

    states = follow_sse(dev_stack, task_id)
    assert states[-1]["status"] == "success", states[-1]
    assert states[-1]["progress"] == 1.0 and states[-1]["stage"] is None
    versions = [s["version"] for s in states]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    progress = [s["progress"] for s in states if s["status"] == "running"]
    assert progress == sorted(progress)

    data, rate, content_type = fetch_audio(dev_stack, states[-1]["file_url"])
    assert content_type == "audio/flac"
    assert rate == 48_000
    assert data.shape[1] == 2
    assert abs(data.shape[0] / rate - 3.0) <= 0.1


async def _produce(bootstrap: str, value: bytes, key: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topics.GENERATION_REQUESTS, value, key=key)
    finally:
        await producer.stop()


def test_a_request_produced_straight_onto_kafka_runs_like_any_other(dev_stack: str, broker: EmbeddedBroker) -> None:
    task_id = f"external-{uuid.uuid4().hex[:8]}"
    event = GenerationRequested(task_id=task_id, params=GenerationParams(prompt="raw kafka", duration=2.0, seed=1))
    asyncio.run(_produce(broker.bootstrap_servers, event.to_bytes(), task_id.encode()))
    final = wait_final(dev_stack, task_id)
    assert final["status"] == "success", final
    data, rate, content_type = fetch_audio(dev_stack, final["file_url"])
    assert content_type == "audio/wav"
    assert abs(data.shape[0] / rate - 2.0) <= 0.1


async def _dead_letters(bootstrap: str) -> list[DeadLetter]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        partition = TopicPartition(topics.DEAD_LETTER, 0)
        consumer.assign([partition])
        end = (await consumer.end_offsets([partition]))[partition]
        found: list[DeadLetter] = []
        while end and await consumer.position(partition) < end:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                found.extend(e for r in records if isinstance(e := parse_event(r.value), DeadLetter))
        return found
    finally:
        await consumer.stop()


def test_a_malformed_event_goes_to_the_dead_letter_topic_and_jobs_keep_flowing(
    dev_stack: str, broker: EmbeddedBroker
) -> None:
    marker = uuid.uuid4().hex
    asyncio.run(
        _produce(broker.bootstrap_servers, f'{{"type": "generation.requested", "x": "{marker}"'.encode(), b"bad")
    )
    follow_up = httpx.post(f"{dev_stack}/generate", json={"prompt": "after the bad one", "duration": 1.5})
    assert wait_final(dev_stack, follow_up.json()["task_id"])["status"] == "success"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        letters = [d for d in asyncio.run(_dead_letters(broker.bootstrap_servers)) if marker in d.value]
        if letters:
            break
        time.sleep(0.5)
    assert letters, "the malformed record never reached the dead-letter topic"
    assert letters[0].source_topic == topics.GENERATION_REQUESTS
    assert letters[0].error


def test_a_job_with_a_webhook_calls_it_signed_and_shows_the_delivery(dev_stack: str) -> None:
    calls: list[tuple[dict[str, str], bytes]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            calls.append((dict(self.headers), self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        hook = f"http://127.0.0.1:{server.server_address[1]}/hook"
        body = {"prompt": "x", "duration": 2.0, "webhook": hook, "webhook_events": ["start", "completed"]}
        accepted = httpx.post(f"{dev_stack}/generate", json=body)
        assert accepted.status_code == 202, accepted.text
        task_id = accepted.json()["task_id"]
        assert wait_final(dev_stack, task_id)["status"] == "success"
        deadline = time.monotonic() + 60
        while len(calls) < 2 or wait_final(dev_stack, task_id).get("webhook_status") is None:
            assert time.monotonic() < deadline, calls
            time.sleep(0.2)
    finally:
        server.shutdown()
    secret = DEV_WEBHOOKS["webhook_secret"]
    for headers, raw in calls:
        verify_signature(secret, headers, raw)
    assert [headers[EVENT_HEADER] for headers, _ in calls] == ["start", "completed"]
    assert json.loads(calls[1][1])["status"]["status"] == "success"
    recorded = wait_final(dev_stack, task_id)["webhook_status"]
    assert (recorded["event"], recorded["state"], recorded["attempts"]) == ("completed", "delivered", 1)
