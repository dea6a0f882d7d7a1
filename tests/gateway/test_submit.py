"""`POST /generate` and `POST /uploads` on a real gateway: every 4xx says what to fix; good jobs reach Kafka."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import httpx
import pytest

from acefarm.infra.storage import LocalStorage
from schemas import topics
from schemas.events import GenerationRequested
from schemas.generation import GenerateRequest
from tests.gateway.conftest import MAX_AUDIO_SECONDS, events_for, stored_lora, tone

B64 = base64.b64encode
GOOD = {"prompt": "warm lofi piano", "duration": 12.5}
TOO_LONG = B64(tone(seconds=MAX_AUDIO_SECONDS + 1, rate=8_000)).decode()
TOO_BIG = B64(tone(seconds=4.0, rate=44_100, channels=2)).decode()  # ~700 kB > 400 kB
NOT_AUDIO = B64(b"hello, this is not audio at all").decode()

BAD_BODIES: list[tuple[str, Any, int, str]] = [
    ("no prompt", {"duration": 10}, 400, "prompt: Field required"),
    ("no duration", {"prompt": "x"}, 400, "duration: Field required"),
    ("too long", {**GOOD, "duration": 1000}, 400, "duration: Input should be less than or equal to 600"),
    ("too short", {**GOOD, "duration": 0.2}, 400, "duration: Input should be greater than or equal to 1"),
    ("duration text", {**GOOD, "duration": "long"}, 400, "duration: must be a number"),
    ("empty prompt", {**GOOD, "prompt": ""}, 400, "prompt: String should have at least 1 character"),
    ("unknown field", {**GOOD, "colour": "red"}, 400, "colour: Extra inputs are not permitted"),
    ("bpm", {**GOOD, "bpm": 10}, 400, "bpm: Input should be greater than or equal to 30"),
    ("key", {**GOOD, "key": "H major"}, 400, "key: key must look like 'C major'"),
    ("time signature", {**GOOD, "time_signature": 5}, 400, "time_signature: time_signature must be 2, 3, 4 or 6"),
    ("language", {**GOOD, "vocal_language": "english"}, 400, "vocal_language: vocal_language must be an ISO 639"),
    ("format", {**GOOD, "audio_format": "aiff"}, 400, "audio_format: Input should be 'wav', 'flac', 'mp3', 'opus'"),
    ("task type", {**GOOD, "task_type": "remix"}, 400, "task_type: Input should be 'text2music'"),
    ("batch", {**GOOD, "batch_size": 9}, 400, "batch_size: Input should be less than or equal to 8"),
    ("seed", {**GOOD, "seed": -1}, 400, "seed: Input should be greater than or equal to 0"),
    ("webhook scheme", {**GOOD, "webhook": "ftp://example.com/x"}, 400, "webhook: the webhook must be an http://"),
    ("webhook events", {**GOOD, "webhook": "https://8.8.8.8/", "webhook_events": ["done"]}, 400, "webhook_events.0"),
    ("steps", {**GOOD, "inference_steps": 0}, 400, "inference_steps: Input should be greater than or equal to 1"),
    ("repaint without source", {**GOOD, "task_type": "repaint"}, 422, "task_type 'repaint' needs source audio"),
    (
        "window backwards",
        {**GOOD, "task_type": "extend", "src_audio_key": "inputs/x/src.wav", "repaint_start": 5, "repaint_end": 2},
        422,
        "repaint_end must be greater than repaint_start",
    ),
    ("lora id pattern", {**GOOD, "lora_id": "Bad ID!"}, 400, "lora_id: String should match pattern"),
    ("lora unknown", {**GOOD, "style_id": "nosuchstyle"}, 422, "lora_id: no finished LoRA has the id 'nosuchstyle'"),
    (
        "bad base64",
        {**GOOD, "task_type": "cover", "src_audio": "%%% not base64"},
        422,
        "src_audio: is not valid base64",
    ),
    ("not audio", {**GOOD, "task_type": "cover", "src_audio": NOT_AUDIO}, 422, "src_audio: not a readable audio file"),
    ("ref too long", {**GOOD, "reference_audio": TOO_LONG}, 422, "reference_audio: the audio lasts 6.0 s; the limit"),
    ("src too big", {**GOOD, "task_type": "cover", "src_audio": TOO_BIG}, 413, "src_audio: the audio is larger than"),
    (
        "key escapes",
        {**GOOD, "task_type": "cover", "src_audio_key": "inputs/../../etc/passwd"},
        422,
        "src_audio_key: is not a valid storage key",
    ),
    (
        "key not an input",
        {**GOOD, "task_type": "cover", "src_audio_key": "outputs/t/take-0.wav"},
        422,
        "src_audio_key: must be a key under 'inputs/'",
    ),
    (
        "key missing",
        {**GOOD, "reference_audio_key": "inputs/uploads/missing.wav"},
        422,
        "reference_audio_key: no uploaded audio has the key",
    ),
    (
        "inline and key",
        {**GOOD, "task_type": "cover", "src_audio": NOT_AUDIO, "src_audio_key": "inputs/u/a.wav"},
        422,
        "give either src_audio (base64) or src_audio_key, not both",
    ),
    ("not an object", [1, 2], 400, "body: must be a JSON object"),
    (
        "stem task on the turbo default model",
        {**GOOD, "task_type": "extract", "src_audio_key": "inputs/u/a.wav", "track_name": "vocals"},
        422,
        "task_type: 'extract' is not available on this farm (no model here does it); models: 'default' (cover, ",
    ),
]


@pytest.mark.parametrize(("name", "body", "code", "message"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
async def test_bad_bodies_say_what_to_fix(
    client: httpx.AsyncClient, name: str, body: Any, code: int, message: str
) -> None:
    response = await client.post("/generate", json=body)
    assert response.status_code == code, response.text
    error = response.json()
    assert error["status_code"] == code
    assert message in error["detail"], error["detail"]
    assert error["extra"], error


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/generate", content=b'{"prompt": ', headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["detail"].startswith("body is not valid JSON")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_wrong_content_type_is_415(client: httpx.AsyncClient, content_type: str | None) -> None:
    headers = {"content-type": content_type} if content_type else {}
    response = await client.post("/generate", content=b'{"prompt": "x", "duration": 5}', headers=headers)
    assert response.status_code == 415, response.text
    assert "Content-Type must be application/json" in response.json()["detail"]


async def test_accepted_job_is_published_keyed_by_task_id(client: httpx.AsyncClient, kafka_env: dict[str, str]) -> None:
    body = {**GOOD, "lyrics": "[verse]\nla la", "style": "jazz", "seed": 42, "bpm": 90, "key": "F# minor"}
    response = await client.post("/generate", json=body)
    assert response.status_code == 202, response.text
    accepted = response.json()
    task_id = accepted["task_id"]
    assert accepted["status"] == "pending"
    assert response.headers["location"] == f"/status/{task_id}"

    right_after = await client.get(f"/status/{task_id}")
    assert right_after.status_code == 200
    assert right_after.json()["status"] == "pending"

    events = await events_for(kafka_env["KAFKA_BOOTSTRAP_SERVERS"], topics.GENERATION_REQUESTS, task_id)
    assert len(events) == 1
    key, event = events[0]
    assert key == task_id.encode()
    assert isinstance(event, GenerationRequested)
    expected = GenerateRequest(**body).to_params(src_audio_key=None, reference_audio_key=None)
    assert event.params == expected


async def test_idempotency_key_queues_once(client: httpx.AsyncClient, kafka_env: dict[str, str]) -> None:
    headers = {"Idempotency-Key": "client-retry-7f3a"}
    first = await client.post("/generate", json=GOOD, headers=headers)
    second = await client.post("/generate", json=GOOD, headers=headers)
    assert first.status_code == second.status_code == 202
    assert first.json()["task_id"] == second.json()["task_id"]
    assert second.headers["idempotent-replayed"] == "true"
    other = await client.post("/generate", json=GOOD, headers={"Idempotency-Key": "another"})
    assert other.json()["task_id"] != first.json()["task_id"]
    events = await events_for(kafka_env["KAFKA_BOOTSTRAP_SERVERS"], topics.GENERATION_REQUESTS, first.json()["task_id"])
    assert len(events) == 1


async def test_concurrent_retries_create_one_job(client: httpx.AsyncClient, kafka_env: dict[str, str]) -> None:
    headers = {"Idempotency-Key": "burst-of-retries"}
    answers = await asyncio.gather(*(client.post("/generate", json=GOOD, headers=headers) for _ in range(5)))
    accepted = [a for a in answers if a.status_code == 202]
    assert accepted and all(a.status_code in (202, 409) for a in answers)
    task_id = accepted[0].json()["task_id"]
    assert {a.json()["task_id"] for a in accepted} == {task_id}
    assert len(await events_for(kafka_env["KAFKA_BOOTSTRAP_SERVERS"], topics.GENERATION_REQUESTS, task_id)) == 1


async def test_inline_audio_is_stored_and_referenced_by_key(
    client: httpx.AsyncClient, kafka_env: dict[str, str], data_dir: Path
) -> None:
    src = tone(seconds=1.0, rate=44_100, fmt="FLAC")
    ref = tone(seconds=0.5, rate=8_000, channels=2)
    body = {**GOOD, "task_type": "cover", "src_audio": B64(src).decode(), "reference_audio": B64(ref).decode()}
    response = await client.post("/generate", json=body)
    assert response.status_code == 202, response.text
    task_id = response.json()["task_id"]
    [(_, event)] = await events_for(kafka_env["KAFKA_BOOTSTRAP_SERVERS"], topics.GENERATION_REQUESTS, task_id)
    assert event.params.src_audio_key == f"inputs/{task_id}/src.flac"
    assert event.params.reference_audio_key == f"inputs/{task_id}/reference.wav"
    storage = LocalStorage(data_dir)
    assert await storage.get_bytes(event.params.src_audio_key) == src
    assert (await storage.stat(event.params.reference_audio_key)).content_type == "audio/wav"  # type: ignore[union-attr]


async def test_upload_then_generate_with_the_key(client: httpx.AsyncClient, kafka_env: dict[str, str]) -> None:
    audio = tone(seconds=2.0, rate=22_050, fmt="OGG")
    upload = await client.post("/uploads", files={"file": ("take.ogg", audio, "audio/ogg")})
    assert upload.status_code == 201, upload.text
    result = upload.json()
    assert result["key"].startswith("inputs/uploads/") and result["key"].endswith(".ogg")
    assert result["size_bytes"] == len(audio)
    assert abs(result["duration_s"] - 2.0) < 0.01
    response = await client.post(
        "/generate", json={**GOOD, "task_type": "repaint", "src_audio_key": result["key"], "repaint_start": 0.5,
                           "repaint_end": 1.5}
    )  # fmt: skip
    assert response.status_code == 202, response.text
    task_id = response.json()["task_id"]
    [(_, event)] = await events_for(kafka_env["KAFKA_BOOTSTRAP_SERVERS"], topics.GENERATION_REQUESTS, task_id)
    assert event.params.src_audio_key == result["key"]


@pytest.mark.parametrize(
    ("payload", "code", "message"),
    [
        (b"not audio", 422, "file: not a readable audio file"),
        (tone(seconds=MAX_AUDIO_SECONDS + 1, rate=8_000), 422, "file: the audio lasts"),
        (tone(seconds=4.8), 413, "file: the audio is larger than the limit"),  # ~423 kB: within the framing room
        (tone(seconds=4.0, channels=2), 413, "body: the request is too large"),
    ],
    ids=["undecodable", "too long", "over the file limit", "over the body limit: refused before reading"],
)
async def test_bad_uploads_are_rejected(client: httpx.AsyncClient, payload: bytes, code: int, message: str) -> None:
    response = await client.post("/uploads", files={"file": ("x.wav", payload, "audio/wav")})
    assert response.status_code == code, response.text
    assert message in response.json()["detail"]


async def test_upload_needs_a_file(client: httpx.AsyncClient) -> None:
    response = await client.post("/uploads", files={"other": ("x.wav", b"abc", "audio/wav")})
    assert response.status_code == 400
    assert "file" in response.json()["detail"]


async def test_generation_with_a_finished_lora(
    client: httpx.AsyncClient, kafka_env: dict[str, str], data_dir: Path
) -> None:
    await stored_lora(data_dir, "lofi-keys", owner="someone")  # any LoRA: with AUTH_MODE=off the caller is admin
    response = await client.post("/generate", json={**GOOD, "lora_id": "lofi-keys", "lora_scale": 0.5})
    assert response.status_code == 202, response.text
    assert response.json()["lora_id"] == "lofi-keys"
    task_id = response.json()["task_id"]
    [(_, event)] = await events_for(kafka_env["KAFKA_BOOTSTRAP_SERVERS"], topics.GENERATION_REQUESTS, task_id)
    assert (event.params.lora_id, event.params.lora_scale) == ("lofi-keys", 0.5)
    assert [(lora.lora_id, lora.scale) for lora in event.params.loras] == [("lofi-keys", 0.5)]


async def test_several_loras_are_each_checked_and_queued_in_order(
    client: httpx.AsyncClient, kafka_env: dict[str, str], data_dir: Path
) -> None:
    await stored_lora(data_dir, "blend-a")
    await stored_lora(data_dir, "blend-b")
    loras = [{"lora_id": "blend-b", "scale": 0.4}, {"lora_id": "blend-a", "scale": 1.2}]
    response = await client.post("/generate", json={**GOOD, "loras": loras})
    assert response.status_code == 202, response.text
    [(_, event)] = await events_for(
        kafka_env["KAFKA_BOOTSTRAP_SERVERS"], topics.GENERATION_REQUESTS, response.json()["task_id"]
    )
    assert [(lora.lora_id, lora.scale) for lora in event.params.loras] == [("blend-b", 0.4), ("blend-a", 1.2)]
    unknown = await client.post("/generate", json={**GOOD, "loras": [*loras, {"lora_id": "nosuch"}]})
    assert unknown.status_code == 422 and "'nosuch'" in unknown.json()["detail"]


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:9/hook", "127.0.0.1 is a loopback address"),
        ("http://localhost:9/hook", "localhost resolves to"),
        ("https://10.1.2.3/hook", "10.1.2.3 is a private address"),
        ("http://169.254.169.254/latest/meta-data", "169.254.169.254 is a link-local address"),
        ("http://[::1]:9/", "::1 is a loopback address"),
        ("http://[::ffff:192.168.0.1]/", "a private address"),
    ],
)
async def test_a_private_webhook_target_is_refused_with_422(client: httpx.AsyncClient, url: str, why: str) -> None:
    response = await client.post("/generate", json={**GOOD, "webhook": url})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail.startswith("webhook: ") and why in detail and "WEBHOOK_ALLOW_PRIVATE" in detail


async def test_the_webhook_travels_on_the_request_event(client: httpx.AsyncClient, kafka_env: dict[str, str]) -> None:
    body = {**GOOD, "webhook": "https://93.184.215.14/acefarm", "webhook_events": ["completed", "start"]}
    response = await client.post("/generate", json=body)
    assert response.status_code == 202, response.text
    task_id = response.json()["task_id"]
    [(_, event)] = await events_for(kafka_env["KAFKA_BOOTSTRAP_SERVERS"], topics.GENERATION_REQUESTS, task_id)
    assert isinstance(event, GenerationRequested)
    assert (event.webhook, event.webhook_events) == ("https://93.184.215.14/acefarm", ["start", "completed"])
