"""The Python client against a running farm: generate and download, SSE resume, idempotent retries, cancel,
auth errors and webhook verification."""

from __future__ import annotations

import asyncio
import http.server
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import soundfile as sf
from aiokafka import AIOKafkaConsumer

from acefarm.client import AcefarmError, AsyncClient, Client, InvalidSignature, RetryPolicy, TaskFailed, verify_webhook
from acefarm.devtools.broker import free_port
from schemas import topics
from schemas.events import GenerationRequested, parse_event
from schemas.status import TaskKind, TaskState, TaskStatusResponse
from schemas.training import TrainingOptions
from tests.client.conftest import WEBHOOK_SECRET, Farm
from tests.lora.zips import tone, tone_dataset
from tests.support.cutting_proxy import CuttingProxy, after_events, at_once

pytestmark = pytest.mark.timeout(300)

QUICK = {"prompt": "a calm sine", "duration": 1.5}


def _versions(statuses: list[TaskStatusResponse]) -> list[int]:
    return [s.version for s in statuses]


def test_sync_generate_follows_the_job_and_downloads_a_file_that_decodes(farm: Farm, tmp_path: Path) -> None:
    seen: list[TaskStatusResponse] = []
    with Client(farm.url, farm.api_key) as client:
        result = client.generate(**QUICK, seed=7, download_to=tmp_path / "song.wav", on_status=seen.append)
    assert result.status.status is TaskState.SUCCESS
    assert result.files == [tmp_path / "song.wav"]
    audio, rate = sf.read(result.files[0])
    assert rate == 48000 and abs(len(audio) / rate - 1.5) < 0.01
    assert seen[-1] == result.status and seen[0].status in (TaskState.PENDING, TaskState.RUNNING)
    assert _versions(seen) == sorted(set(_versions(seen))), "each state once, in order"
    assert not list(tmp_path.glob(".*.part")), "no partial download left behind"


async def test_async_generate_downloads_every_take(farm: Farm, tmp_path: Path) -> None:
    async with AsyncClient(farm.url, farm.api_key) as client:
        result = await client.generate(**QUICK, batch_size=2, audio_format="flac", download_to=tmp_path)
        again = await client.status(result.task_id)
    assert [p.name for p in result.files] == [f"{result.task_id}-take-0.flac", f"{result.task_id}-take-1.flac"]
    for path in result.files:
        info = sf.info(path)
        assert info.format == "FLAC" and abs(info.duration - 1.5) < 0.01
    assert again.status is TaskState.SUCCESS and again.file_urls == result.status.file_urls


def test_events_resume_after_a_dropped_connection_without_gaps_or_repeats(farm: Farm) -> None:
    cut = CuttingProxy(farm.port, re.compile(rb"GET /tasks/[^/ ]+/events"), after_events(2))
    with cut, Client(cut.url, farm.api_key) as client:
        task_id = client.submit(prompt="a slow sine step_s=0.2", duration=1.5, inference_steps=10).task_id
        seen = list(client.events(task_id))
    assert cut.cuts == 1
    assert seen[-1].status is TaskState.SUCCESS
    assert _versions(seen) == sorted(set(_versions(seen))), "no state repeated or out of order"
    resumed = [r for r in cut.requests if b"/events" in r and re.search(rb"(?i)last-event-id: \d+", r)]
    assert len(resumed) == 1, "reconnected once, with Last-Event-ID"
    last_before_cut = int(re.search(rb"(?i)last-event-id: (\d+)", resumed[0]).group(1))  # type: ignore[union-attr]
    assert last_before_cut in _versions(seen) and last_before_cut < seen[-1].version


async def _requests_for(bootstrap: str, task_id: str) -> list[GenerationRequested]:
    consumer = AIOKafkaConsumer(topics.GENERATION_REQUESTS, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        found: list[GenerationRequested] = []
        for _ in range(3):
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                found.extend(e for r in records if isinstance(e := parse_event(r.value), GenerationRequested))
        return [e for e in found if e.task_id == task_id]
    finally:
        await consumer.stop()


def test_a_submit_whose_answer_is_lost_is_retried_with_the_same_key_and_queued_once(farm: Farm) -> None:
    cut = CuttingProxy(farm.port, re.compile(rb"POST /generate "), at_once)
    with cut, Client(cut.url, farm.api_key, retry=RetryPolicy(backoff_s=0.2)) as client:
        accepted = client.submit(**QUICK, seed=11)
        final = client.wait(accepted.task_id)
    assert cut.cuts == 1
    posts = [r for r in cut.requests if r.startswith(b"POST /generate ")]
    keys = {re.search(rb"(?i)idempotency-key: ([^\r\n]+)", r).group(1) for r in posts}  # type: ignore[union-attr]
    assert len(posts) == 2 and len(keys) == 1, "the retry carried the same Idempotency-Key"
    assert final.status is TaskState.SUCCESS
    assert len(asyncio.run(_requests_for(farm.bootstrap, accepted.task_id))) == 1, "queued exactly once"


def test_cancel_a_running_job(farm: Farm) -> None:
    with Client(farm.url, farm.api_key) as client:
        task_id = client.submit(prompt="a long sine step_s=0.5", duration=1.5, inference_steps=40).task_id
        next(s for s in client.events(task_id) if s.status is TaskState.RUNNING)
        client.cancel(task_id)
        final = client.wait(task_id, timeout_s=60)
        assert final.status is TaskState.CANCELLED
        again = client.cancel(task_id)  # on a final task: its files are deleted, its status stays
    assert again.status is TaskState.CANCELLED and again.version == final.version


def test_a_failed_job_raises_task_failed_with_its_status(farm: Farm) -> None:
    with Client(farm.url, farm.api_key) as client, pytest.raises(TaskFailed) as failed:
        client.generate(prompt="please explode", duration=1.5)
    assert failed.value.status.status is TaskState.FAILED and not failed.value.cancelled
    assert "exploded on purpose" in str(failed.value)


def test_a_bad_key_is_refused_at_once_with_the_apis_message(farm: Farm) -> None:
    with Client(farm.url, "acefarm_nope_0000") as client, pytest.raises(AcefarmError) as refused:
        client.status("whatever")
    assert refused.value.status_code == 401
    assert refused.value.body is not None and "API key" in refused.value.detail


def test_unknown_task_is_a_404_and_bad_fields_are_refused_before_sending(farm: Farm) -> None:
    with Client(farm.url, farm.api_key) as client:
        with pytest.raises(AcefarmError) as unknown:
            client.status("no-such-task")
        assert unknown.value.status_code == 404
        with pytest.raises(ValueError, match="duration"):
            client.submit(prompt="x", duration=0)


def test_upload_and_lora_training_requests_reach_the_gateway(farm: Farm, tmp_path: Path) -> None:
    source = tmp_path / "source.wav"
    source.write_bytes(tone(2.0))
    options = TrainingOptions(steps=5, rank=4, trigger_tag="sines")
    with Client(farm.url, farm.api_key) as client:
        uploaded = client.upload(source)
        with pytest.raises(AcefarmError) as refused:
            client.train_lora(tone_dataset(tmp_path / "one.zip", tracks=1, seconds=6), "Too few")
        accepted = client.train_lora(tone_dataset(tmp_path / "three.zip", seconds=6), "Sine waves", options)
        queued = client.status(accepted.task_id)
    assert uploaded.key.startswith("inputs/uploads/") and abs(uploaded.duration_s - 2.0) < 0.01
    assert refused.value.status_code == 400 and "file" in refused.value.detail
    assert accepted.lora_id is not None and accepted.lora_id.startswith("sine-waves")
    assert queued.kind is TaskKind.TRAINING and queued.lora_id == accepted.lora_id


Received = list[tuple[dict[str, str], bytes]]


@pytest.fixture
def receiver() -> Iterator[tuple[str, Received]]:
    """A real webhook receiver on loopback: the URL to give a job, and the (headers, body) of each POST."""
    received: Received = []

    class Hooks(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append((dict(self.headers.items()), self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Hooks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    finally:
        server.shutdown()


def test_verify_webhook_accepts_a_real_delivery_and_refuses_a_tampered_one(
    farm: Farm, receiver: tuple[str, Received]
) -> None:
    hook_url, received = receiver
    with Client(farm.url, farm.api_key) as client:
        result = client.generate(**QUICK, webhook=hook_url)
    assert _poll(lambda: bool(received), 30), "the webhook was delivered"
    headers, body = received[0]
    verify_webhook(WEBHOOK_SECRET, headers, body)
    assert json.loads(body)["task_id"] == result.task_id
    with pytest.raises(InvalidSignature):
        verify_webhook(WEBHOOK_SECRET, headers, body.replace(b"success", b"failed"))
    with pytest.raises(InvalidSignature):
        verify_webhook("another-secret-of-at-least-32-characters", headers, body)


def _poll(check: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True
