"""Gateway fixtures: a real uvicorn server on the test broker, a raw status producer, test audio."""

from __future__ import annotations

import io
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from acefarm.devtools.broker import free_port
from acefarm.infra.settings import Settings
from acefarm.infra.storage import LocalStorage
from acefarm.model.loras import write_manifest
from gateway.admission import BacklogProbe
from gateway.server import ServerThread
from schemas import topics
from schemas.events import Envelope, TaskStatusRecord, parse_event
from schemas.status import StoredFile, TaskKind, TaskState, TaskStatus
from schemas.training import ClipCaption, LoraManifest, TrackInfo, TrainingOptions

KEEPALIVE_S = 0.5
MAX_AUDIO_BYTES = 400_000
MAX_AUDIO_SECONDS = 5.0


def gateway_settings(kafka_env: dict[str, str], data_dir: Path, **overrides: Any) -> Settings:
    """Settings for a test gateway on the test broker; AUTH_MODE=off unless overridden (tests/gateway/test_tenancy.py
    runs with keys)."""
    base: dict[str, Any] = {k.lower(): v for k, v in kafka_env.items()}
    base.update(
        output_dir=data_dir,
        auth_mode="off",
        sse_keepalive_s=KEEPALIVE_S,
        max_input_audio_bytes=MAX_AUDIO_BYTES,
        max_input_audio_seconds=MAX_AUDIO_SECONDS,
        log_format="console",
    )
    base.update(overrides)
    return Settings(**base)


def wait_ready(url: str, timeout_s: float = 60.0) -> None:
    """Poll /readyz until it answers 200."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if httpx.get(f"{url}/readyz", timeout=10).status_code == 200:
            return
        time.sleep(0.1)
    raise TimeoutError(f"{url} not ready")


def serve(settings: Settings, backlog: BacklogProbe | None = None) -> Iterator[str]:
    """Run the gateway on a free port for the duration (with `backlog` as its queue probe); yields its base URL."""
    port = free_port()
    server = ServerThread(settings, port=port, backlog=backlog).start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url)
        yield url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The local storage root of the shared test gateway."""
    return tmp_path_factory.mktemp("gateway-data")


@pytest.fixture(scope="session")
def gateway_url(kafka_env: dict[str, str], data_dir: Path) -> Iterator[str]:
    """A gateway on the test broker with local storage."""
    yield from serve(gateway_settings(kafka_env, data_dir))


@pytest.fixture
async def client(gateway_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the shared test gateway."""
    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as http:
        yield http


@pytest.fixture(scope="session")
async def raw_producer(kafka_env: dict[str, str]) -> AsyncIterator[AIOKafkaProducer]:
    """A plain aiokafka producer, standing in for the `streams` service."""
    producer = AIOKafkaProducer(bootstrap_servers=kafka_env["KAFKA_BOOTSTRAP_SERVERS"], acks="all")
    await producer.start()
    yield producer
    await producer.stop()


PublishStatus = Callable[..., Awaitable[TaskStatus]]


@pytest.fixture
def publish_status(raw_producer: AIOKafkaProducer) -> PublishStatus:
    """Publish a `TaskStatusRecord` snapshot as `streams` would; returns the status published."""

    async def publish(task_id: str, version: int, status: TaskState, **fields: Any) -> TaskStatus:
        now = datetime.now(UTC)
        created = fields.pop("created_at", now)
        snapshot = TaskStatus(
            task_id=task_id,
            kind=TaskKind.GENERATION,
            status=status,
            created_at=created,
            updated_at=now,
            version=version,
            **fields,
        )
        record = TaskStatusRecord(task_id=task_id, status=snapshot)
        await raw_producer.send_and_wait(topics.TASK_STATUS, record.to_bytes(), key=task_id.encode())
        return snapshot

    return publish


def tone(seconds: float = 0.5, rate: int = 44_100, channels: int = 1, fmt: str = "WAV") -> bytes:
    """A real encoded sine tone."""
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    frames = np.repeat(samples[:, None], channels, axis=1)
    buffer = io.BytesIO()
    sf.write(buffer, frames, rate, format=fmt)
    return buffer.getvalue()


async def result_file(data_dir: Path, key: str, payload: bytes, content_type: str) -> StoredFile:
    """Store a result in the gateway's local storage, as a worker would, and describe it."""
    info = await LocalStorage(data_dir).put_bytes(key, payload, content_type)
    return StoredFile(key=key, content_type=content_type, size_bytes=info.size)


async def stored_lora(data_dir: Path, lora_id: str, owner: str | None = None) -> LoraManifest:
    """Store a finished LoRA's manifest (private, owned by `owner`) in local storage, as the trainer would."""
    manifest = LoraManifest(
        lora_id=lora_id,
        style_name=f"Style {lora_id}",
        base_model="tiny",
        options=TrainingOptions(),
        tracks=[
            TrackInfo(
                name="a.wav",
                duration_s=2.0,
                caption="secret caption",
                lyrics="secret lyrics",
                clips=[ClipCaption(start_s=0.0, caption="secret caption", caption_source="metadata")],
            )
        ],
        steps_done=10,
        created_at=datetime.now(UTC),
        task_id=f"train-{lora_id}",
        owner=owner,
    )
    await write_manifest(LocalStorage(data_dir), manifest)
    return manifest


async def events_for(bootstrap: str, topic: str, task_id: str) -> list[tuple[bytes | None, Envelope]]:
    """Every event about `task_id` on `topic` so far, as (record key, parsed event)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        found: list[tuple[bytes | None, Envelope]] = []
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    # Other tests share the broker, and some put malformed records on purpose: only
                    # records keyed by this task are parsed (the gateway keys every event by task id).
                    if record.key == task_id.encode():
                        found.append((record.key, parse_event(record.value)))
        return found
    finally:
        await consumer.stop()
