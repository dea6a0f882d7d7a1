"""Two tenants and an admin on a real gateway with AUTH_MODE=keys: every route answers only to its owner or an
admin, someone else's id is the unknown id's 404, links that work without headers are signed, idempotency
keys are per owner, and a revoked key stops working on a second gateway within seconds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

from acefarm.devtools.keys_cli import publish_key, revoke_key
from acefarm.infra.settings import Settings
from gateway.inputs import upload_prefix
from gateway.signed_links import LinkSigner
from gateway.submit import request_hash, task_id_for
from schemas import topics
from schemas.events import GenerationRequested, TrainingRequested
from schemas.generation import GenerateRequest
from schemas.keys import ApiKeyRecord, Role
from schemas.status import TaskState
from tests.gateway.conftest import (
    PublishStatus,
    events_for,
    gateway_settings,
    result_file,
    serve,
    stored_lora,
    tone,
)
from tests.lora.conftest import TEST_LIMITS_ENV
from tests.lora.zips import tone_dataset
from tests.support.ids import new_task_id

LINK_SECRET = "l" * 48
PROPAGATION_S = 5.0
JOB = {"prompt": "lofi piano", "duration": 2}


@dataclass(frozen=True)
class Farm:
    """A keys-mode gateway and the secrets of its three callers."""

    url: str
    settings: Settings
    data_dir: Path
    alice: str
    bob: str
    admin: str


@pytest.fixture(scope="module")
def farm(kafka_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    """A gateway with AUTH_MODE=keys; alice and bob (users) and root (admin) get keys through the key topic."""
    data_dir = tmp_path_factory.mktemp("tenancy-data")
    limits = {k.lower(): v for k, v in TEST_LIMITS_ENV.items()}
    settings = gateway_settings(kafka_env, data_dir, auth_mode="keys", link_signing_secret=LINK_SECRET, **limits)
    secrets: dict[str, str] = {}
    for owner, role in (("alice", Role.USER), ("bob", Role.USER), ("root", Role.ADMIN)):
        record, secrets[owner] = ApiKeyRecord.issue(owner, role)
        asyncio.run(publish_key(settings, record))
    for url in serve(settings):
        yield Farm(url, settings, data_dir, secrets["alice"], secrets["bob"], secrets["root"])


def bearer(secret: str) -> dict[str, str]:
    """Headers carrying `secret` as a Bearer key."""
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
async def http(farm: Farm) -> AsyncIterator[httpx.AsyncClient]:
    """A client for the keys-mode gateway that sends no key of its own."""
    async with httpx.AsyncClient(base_url=farm.url, timeout=30) as client:
        yield client


async def wait_visible(http: httpx.AsyncClient, task_id: str, secret: str, version: int = 0) -> dict[str, Any]:
    """Poll GET /status as `secret`'s owner until the task reaches `version`."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        response = await http.get(f"/status/{task_id}", headers=bearer(secret))
        if response.status_code == 200 and response.json()["version"] >= version:
            return dict(response.json())
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{task_id} never reached version {version}")


async def first_sse_data(http: httpx.AsyncClient, url: str, headers: dict[str, str] | None = None) -> str:
    """The first `data:` line of an event stream (which must answer 200)."""
    async with asyncio.timeout(20), http.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                return line
    raise AssertionError("the stream ended without data")


def unknown_body(body: dict[str, Any], unknown_id: str, task_id: str) -> dict[str, Any]:
    """An unknown id's 404 body as it reads for `task_id`."""
    return {**body, "detail": body["detail"].replace(unknown_id, task_id)}


async def test_every_api_route_needs_a_key_and_the_public_ones_do_not(http: httpx.AsyncClient) -> None:
    routes = [
        ("POST", "/generate"),
        ("POST", "/uploads"),
        ("GET", "/status/x"),
        ("DELETE", "/tasks/x"),
        ("GET", "/tasks/x/events"),
        ("GET", "/files/outputs/x/take-0.wav"),
        ("POST", "/train/lora"),
        ("GET", "/loras"),
        ("GET", "/loras/x"),
        ("PATCH", "/loras/x"),
        ("DELETE", "/loras/x"),
    ]
    for method, path in routes:
        response = await http.request(method, path, json={})
        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["WWW-Authenticate"].startswith("Bearer"), (method, path)
        assert "Authorization: Bearer <key>" in response.json()["detail"]
    wrong = await http.get("/loras", headers=bearer("af_000000000000_nope"))
    assert wrong.status_code == 401 and "unknown API key" in wrong.json()["detail"]
    for path in ("/healthz", "/readyz", "/", "/static/app.js", "/schema/openapi.json", "/docs"):
        assert (await http.get(path)).status_code == 200, path


async def test_tasks_answer_only_to_their_owner_or_an_admin(farm: Farm, http: httpx.AsyncClient) -> None:
    accepted = await http.post("/generate", json=JOB, headers=bearer(farm.alice))
    assert accepted.status_code == 202, accepted.text
    task_id = accepted.json()["task_id"]
    [(_, event)] = await events_for(farm.settings.kafka_bootstrap_servers, topics.GENERATION_REQUESTS, task_id)
    assert isinstance(event, GenerationRequested) and event.owner == "alice"
    assert event.request_hash == request_hash(GenerateRequest.model_validate(JOB))
    mine = await wait_visible(http, task_id, farm.alice)
    assert mine["owner"] == "alice" and mine["status"] == "pending"

    unknown_id = new_task_id()
    for method, path in (("GET", "/status/{}"), ("DELETE", "/tasks/{}"), ("GET", "/tasks/{}/events")):
        unknown = await http.request(method, path.format(unknown_id), headers=bearer(farm.bob))
        foreign = await http.request(method, path.format(task_id), headers=bearer(farm.bob))
        assert (unknown.status_code, foreign.status_code) == (404, 404), (method, path)
        assert foreign.json() == unknown_body(unknown.json(), unknown_id, task_id), "someone else's id reveals nothing"

    assert (await http.get(f"/status/{task_id}", headers=bearer(farm.admin))).json()["owner"] == "alice"
    assert '"owner":"alice"' in await first_sse_data(http, f"/tasks/{task_id}/events", bearer(farm.alice))
    assert '"owner":"alice"' in await first_sse_data(http, f"/tasks/{task_id}/events", bearer(farm.admin))
    # EventSource cannot send headers: the status carries a signed events link that works without one.
    assert (await http.get(f"/tasks/{task_id}/events")).status_code == 401
    assert '"owner":"alice"' in await first_sse_data(http, mine["events_url"])
    cancelled = await http.delete(f"/tasks/{task_id}", headers=bearer(farm.alice))
    assert cancelled.status_code == 202
    assert [e for _, e in await events_for(farm.settings.kafka_bootstrap_servers, topics.TASK_CONTROL, task_id)]


async def test_result_files_need_the_owner_or_a_valid_signed_link(
    farm: Farm, http: httpx.AsyncClient, publish_status: PublishStatus
) -> None:
    task_id = new_task_id()
    key = f"outputs/{task_id}/take-0.wav"
    payload = tone(0.2)
    stored = await result_file(farm.data_dir, key, payload, "audio/wav")
    await publish_status(task_id, 1, TaskState.SUCCESS, files=[stored], owner="alice")
    status = await wait_visible(http, task_id, farm.alice, 1)
    link = status["file_url"]
    assert (await http.get(link)).content == payload, "a signed link works without headers (<audio src>)"
    path = f"/files/{key}"
    assert (await http.get(path, headers=bearer(farm.alice))).content == payload
    assert (await http.get(path, headers=bearer(farm.admin))).content == payload
    assert (await http.get(path)).status_code == 401
    bobs = await http.get(path, headers=bearer(farm.bob))
    missing = await http.get(f"/files/outputs/{task_id}/take-9.wav", headers=bearer(farm.bob))
    assert bobs.status_code == missing.status_code == 404 and bobs.json() == missing.json()

    query = dict(parse_qsl(urlsplit(link).query))
    tampered = {**query, "owner": "bob"}
    assert (await http.get(path, params=tampered)).status_code == 401
    assert (await http.get(path, params=tampered, headers=bearer(farm.bob))).status_code == 404
    other_file = {**query}
    assert (await http.get(f"/files/outputs/{task_id}/take-1.wav", params=other_file)).status_code == 401
    past = LinkSigner(LINK_SECRET.encode(), farm.settings.signed_link_ttl_s, clock=lambda: time.time() - 7200)
    expired = past.sign(path, "alice", ttl_s=60)
    assert (await http.get(path, params=expired)).status_code == 401
    fresh = LinkSigner(LINK_SECRET.encode(), farm.settings.signed_link_ttl_s).sign(path, "alice")
    assert (await http.get(path, params=fresh)).content == payload, "the same secret verifies on every replica"


async def test_uploads_are_bound_to_their_owner(farm: Farm, http: httpx.AsyncClient) -> None:
    audio = tone(0.5)
    upload = await http.post("/uploads", files={"file": ("a.wav", audio, "audio/wav")}, headers=bearer(farm.alice))
    assert upload.status_code == 201, upload.text
    key = upload.json()["key"]
    assert key.startswith(upload_prefix("alice")) and "alice" not in key
    job = {**JOB, "task_type": "repaint", "src_audio_key": key, "repaint_start": 0.0, "repaint_end": 0.2}
    stolen = await http.post("/generate", json=job, headers=bearer(farm.bob))
    unknown = await http.post(
        "/generate", json={**job, "src_audio_key": upload_prefix("bob") + "none.wav"}, headers=bearer(farm.bob)
    )
    assert stolen.status_code == unknown.status_code == 422  # well-formed, but no upload of theirs: the same answer
    assert stolen.json()["detail"] == unknown.json()["detail"].replace(upload_prefix("bob") + "none.wav", key)
    own = await http.post("/generate", json=job, headers=bearer(farm.alice))
    assert own.status_code == 202, own.text
    assert (await http.post("/generate", json=job, headers=bearer(farm.admin))).status_code == 202


async def test_loras_are_private_until_published(farm: Farm, http: httpx.AsyncClient) -> None:
    lora_id = f"alices-style-{new_task_id()[2:8]}"
    await stored_lora(farm.data_dir, lora_id, owner="alice")
    unknown_id = "no-such-style-000000"

    async def listed(secret: str) -> dict[str, Any]:
        response = await http.get("/loras", headers=bearer(secret))
        return {m["lora_id"]: m for m in response.json()}

    assert lora_id in await listed(farm.alice) and lora_id in await listed(farm.admin)
    assert lora_id not in await listed(farm.bob)
    for method in ("GET", "DELETE", "PATCH"):
        body = {"public": True} if method == "PATCH" else None
        foreign = await http.request(method, f"/loras/{lora_id}", json=body, headers=bearer(farm.bob))
        unknown = await http.request(method, f"/loras/{unknown_id}", json=body, headers=bearer(farm.bob))
        assert foreign.status_code == unknown.status_code == 404, (method, foreign.text)
        assert foreign.json()["detail"] == unknown.json()["detail"].replace(unknown_id, lora_id)
    generate = {**JOB, "lora_id": lora_id}
    refused = await http.post("/generate", json=generate, headers=bearer(farm.bob))
    unknown = await http.post("/generate", json={**generate, "lora_id": unknown_id}, headers=bearer(farm.bob))
    assert refused.status_code == unknown.status_code == 422  # someone else's private LoRA reads as unknown
    assert refused.json()["detail"] == unknown.json()["detail"].replace(unknown_id, lora_id)

    published = await http.patch(f"/loras/{lora_id}", json={"public": True}, headers=bearer(farm.alice))
    assert published.status_code == 200 and published.json()["public"] is True
    seen = (await listed(farm.bob))[lora_id]
    assert seen["public"] and [(t["lyrics"], t["caption"], t["clips"]) for t in seen["tracks"]] == [(None, None, [])]
    one = (await http.get(f"/loras/{lora_id}", headers=bearer(farm.bob))).json()
    assert one["tracks"][0]["lyrics"] is None
    own = (await http.get(f"/loras/{lora_id}", headers=bearer(farm.alice))).json()
    assert own["tracks"][0]["lyrics"] == "secret lyrics" and own["tracks"][0]["clips"][0]["caption"] == "secret caption"
    assert (await http.post("/generate", json=generate, headers=bearer(farm.bob))).status_code == 202
    assert (await http.delete(f"/loras/{lora_id}", headers=bearer(farm.bob))).status_code == 404
    assert (await http.patch(f"/loras/{lora_id}", json={"public": False}, headers=bearer(farm.bob))).status_code == 404
    assert (await http.delete(f"/loras/{lora_id}", headers=bearer(farm.admin))).status_code == 204
    assert lora_id not in await listed(farm.alice)


def test_training_requests_carry_their_owner(farm: Farm, tmp_path: Path) -> None:
    with tone_dataset(tmp_path / "ok.zip").open("rb") as f:
        response = httpx.post(
            f"{farm.url}/train/lora",
            files={"file": ("ok.zip", f, "application/zip")},
            data={"style_name": "Bob's tones", "steps": "5"},
            headers=bearer(farm.bob),
            timeout=60,
        )
    assert response.status_code == 202, response.text
    task_id = response.json()["task_id"]
    events = asyncio.run(events_for(farm.settings.kafka_bootstrap_servers, topics.TRAINING_REQUESTS, task_id))
    [(_, event)] = events
    assert isinstance(event, TrainingRequested) and event.owner == "bob"
    status = httpx.get(f"{farm.url}/status/{task_id}", headers=bearer(farm.bob), timeout=10).json()
    assert status["owner"] == "bob" and status["kind"] == "training"
    assert httpx.get(f"{farm.url}/status/{task_id}", headers=bearer(farm.alice), timeout=10).status_code == 404


async def test_idempotency_keys_are_per_owner_and_bodies_must_match(farm: Farm, http: httpx.AsyncClient) -> None:
    key = {"Idempotency-Key": f"order-{new_task_id()}"}
    first = await http.post("/generate", json=JOB, headers=bearer(farm.alice) | key)
    again = await http.post("/generate", json=JOB, headers=bearer(farm.alice) | key)
    assert first.status_code == again.status_code == 202
    assert first.json()["task_id"] == again.json()["task_id"] and again.headers["Idempotent-Replayed"] == "true"
    other = await http.post("/generate", json=JOB, headers=bearer(farm.bob) | key)
    assert other.status_code == 202 and "Idempotent-Replayed" not in other.headers
    assert other.json()["task_id"] != first.json()["task_id"], "a guessed key never reaches another owner's task"
    changed = await http.post("/generate", json={**JOB, "duration": 3}, headers=bearer(farm.alice) | key)
    assert changed.status_code == 422
    assert key["Idempotency-Key"] in changed.json()["detail"] and "different request body" in changed.json()["detail"]


async def test_a_different_body_is_refused_from_the_status_topic_too(
    farm: Farm, http: httpx.AsyncClient, publish_status: PublishStatus
) -> None:
    """What another replica accepted reaches this one through the status topic, with the body's hash."""
    key = f"order-{new_task_id()}"
    task_id = task_id_for("alice", key)
    body_hash = request_hash(GenerateRequest.model_validate(JOB))
    await publish_status(task_id, 1, TaskState.RUNNING, owner="alice", request_hash=body_hash)
    await wait_visible(http, task_id, farm.alice, 1)
    headers = bearer(farm.alice) | {"Idempotency-Key": key}
    replay = await http.post("/generate", json=JOB, headers=headers)
    assert replay.status_code == 202 and replay.json() == {"task_id": task_id, "status": "running", "lora_id": None}
    assert (await http.post("/generate", json={**JOB, "prompt": "other"}, headers=headers)).status_code == 422


async def test_a_revoked_key_is_refused_by_a_second_gateway_within_seconds(farm: Farm) -> None:
    record, secret = ApiKeyRecord.issue("carol")
    await publish_key(farm.settings, record)
    second = serve(farm.settings)
    url = await asyncio.to_thread(next, second)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as other:
            assert (await other.get("/loras", headers=bearer(secret))).status_code == 200
            await revoke_key(farm.settings, record.key_id)
            started = time.monotonic()
            while (await other.get("/loras", headers=bearer(secret))).status_code != 401:
                assert time.monotonic() - started < PROPAGATION_S, "the revocation did not reach the second gateway"
                await asyncio.sleep(0.05)
            refused = await other.get("/loras", headers=bearer(secret))
            assert "revoked" in refused.json()["detail"]
    finally:
        await asyncio.to_thread(second.close)
