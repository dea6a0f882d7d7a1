"""Admission control on a real gateway with AUTH_MODE=keys (keys created through the key topic): the rate,
unfinished-jobs, cost and priority limits per key, the farm-wide backlog 503 (a probe object the test sets, for
exact `Retry-After` figures; test_backlog_admission.py runs the real backlog reader), each with its status, JSON
body and `Retry-After`; a refused request publishes nothing and stores nothing, and one tenant's refusal leaves
another tenant's requests alone."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from acefarm.devtools.keys_cli import publish_key
from acefarm.infra.settings import Settings
from gateway.submit import task_id_for
from schemas import topics
from schemas.events import GenerationRequested
from schemas.keys import ApiKeyRecord, KeyLimits, Role
from schemas.status import TaskState
from schemas.tenancy import Priority
from tests.gateway.conftest import PublishStatus, events_for, gateway_settings, serve, tone
from tests.lora.conftest import TEST_LIMITS_ENV
from tests.lora.zips import tone_dataset
from tests.support.ids import new_task_id

JOB = {"prompt": "lofi piano", "duration": 2}
"""Costs 2 s × 1 take × 8 steps = 16."""
ROOMY = KeyLimits(requests_per_s=100, burst=100, max_unfinished=100)
MAX_QUEUED = 50


class FakeBacklog:
    """The farm's queue as the test sets it (the real probe reads Kafka offsets; see gateway/admission.py)."""

    def __init__(self) -> None:
        self.queued: int | None = None
        self.rate: float | None = None

    def queued_jobs(self) -> int | None:
        """What the test set."""
        return self.queued

    def drain_rate_per_s(self) -> float | None:
        """What the test set."""
        return self.rate


@dataclass(frozen=True)
class Farm:
    """A keys-mode gateway, its queue probe and one secret per tenant."""

    url: str
    settings: Settings
    data_dir: Path
    backlog: FakeBacklog
    keys: dict[str, str]
    owners: dict[str, str]


TENANTS: dict[str, KeyLimits] = {
    "slow": KeyLimits(requests_per_s=0.2, burst=2, max_unfinished=100),
    "few": KeyLimits(requests_per_s=100, burst=100),  # max_unfinished: the farm's DEFAULT_MAX_UNFINISHED
    "cheap": KeyLimits(requests_per_s=100, burst=100, max_unfinished=100, max_cost=100),
    "vip": KeyLimits(requests_per_s=100, burst=100, max_unfinished=100, priorities=(Priority.HIGH,)),
    "plain": ROOMY,
    "other": ROOMY,
}


@pytest.fixture(scope="module")
def farm(kafka_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    """A gateway with keys on, farm defaults of 2 unfinished jobs and `MAX_QUEUED` queued jobs."""
    data_dir = tmp_path_factory.mktemp("quota-data")
    limits = {k.lower(): v for k, v in TEST_LIMITS_ENV.items()}
    settings = gateway_settings(
        kafka_env,
        data_dir,
        auth_mode="keys",
        default_max_unfinished=2,
        max_queued_jobs=MAX_QUEUED,
        training_step_cost=10,
        **limits,
    )
    keys: dict[str, str] = {}
    owners = {tenant: f"q-{tenant}-{new_task_id()[2:8]}" for tenant in TENANTS}
    for tenant, key_limits in TENANTS.items():
        record, keys[tenant] = ApiKeyRecord.issue(owners[tenant], Role.USER, key_limits)
        asyncio.run(publish_key(settings, record))
    backlog = FakeBacklog()
    for url in serve(settings, backlog):
        yield Farm(url, settings, data_dir, backlog, keys, owners)


@pytest.fixture
async def http(farm: Farm) -> AsyncIterator[httpx.AsyncClient]:
    """A client for the keys-mode gateway."""
    async with httpx.AsyncClient(base_url=farm.url, timeout=30) as client:
        yield client


def as_(farm: Farm, tenant: str, idempotency_key: str | None = None) -> dict[str, str]:
    """Headers carrying `tenant`'s key (and an Idempotency-Key, which fixes the task id a request would get)."""
    headers = {"Authorization": f"Bearer {farm.keys[tenant]}"}
    return headers | ({"Idempotency-Key": idempotency_key} if idempotency_key else {})


def owner_of(farm: Farm, tenant: str) -> str:
    """The owner id behind `tenant`'s key."""
    return farm.owners[tenant]


def stored_files(farm: Farm) -> set[Path]:
    """Everything in the gateway's storage."""
    return {p for p in farm.data_dir.rglob("*") if p.is_file()}


async def published(farm: Farm, task_id: str, topic: str = topics.GENERATION_REQUESTS) -> list[Any]:
    """Every event about `task_id` on `topic`."""
    return [event for _, event in await events_for(farm.settings.kafka_bootstrap_servers, topic, task_id)]


def assert_refused(response: httpx.Response, status: int, limit: str, retry_after: bool) -> dict[str, Any]:
    """The refusal's status, the limit named in its JSON body, and `Retry-After` when promised; the body."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["status_code"] == status and body["extra"]["limit"] == limit, body
    if retry_after:
        assert int(response.headers["Retry-After"]) >= 1
        assert body["extra"]["retry_after_s"] == int(response.headers["Retry-After"])
    else:
        assert "Retry-After" not in response.headers
    return body


def inline_cover() -> dict[str, Any]:
    """A job with inline source audio (stored under inputs/{task_id}/ when accepted)."""
    return {**JOB, "task_type": "cover", "src_audio": base64.b64encode(tone(0.5)).decode()}


async def test_rate_refusal_has_retry_after_and_leaves_nothing_behind(farm: Farm, http: httpx.AsyncClient) -> None:
    for _ in range(2):  # the burst
        assert (await http.post("/generate", json=JOB, headers=as_(farm, "slow"))).status_code == 202
    before = stored_files(farm)
    key = f"rate-{new_task_id()}"
    refused = await http.post("/generate", json=inline_cover(), headers=as_(farm, "slow", key))
    body = assert_refused(refused, 429, "rate", retry_after=True)
    assert 1 <= int(refused.headers["Retry-After"]) <= 5, "0.2 requests/s: a token every 5 s"
    assert "0.2 requests/s with bursts of 2" in body["detail"]
    upload = await http.post("/uploads", files={"file": ("a.wav", tone(0.5), "audio/wav")}, headers=as_(farm, "slow"))
    assert_refused(upload, 429, "rate", retry_after=True)
    task_id = task_id_for(owner_of(farm, "slow"), key)
    assert await published(farm, task_id) == [], "a refused request publishes nothing"
    assert stored_files(farm) == before, "a refused request stores neither inline audio nor uploads"
    assert (await http.get(f"/status/{task_id}", headers=as_(farm, "slow"))).status_code == 404, "no pending row"
    assert (await http.post("/generate", json=JOB, headers=as_(farm, "other"))).status_code == 202, "others go on"


async def test_unfinished_jobs_refusal_lifts_when_a_job_finishes(
    farm: Farm, http: httpx.AsyncClient, publish_status: PublishStatus
) -> None:
    accepted = [await http.post("/generate", json=JOB, headers=as_(farm, "few")) for _ in range(2)]
    assert [r.status_code for r in accepted] == [202, 202]
    key = f"busy-{new_task_id()}"
    refused = await http.post("/generate", json=inline_cover(), headers=as_(farm, "few", key))
    body = assert_refused(refused, 429, "unfinished", retry_after=True)
    assert "2 of your jobs are pending or running" in body["detail"] and "allows 2 at once" in body["detail"]
    assert await published(farm, task_id_for(owner_of(farm, "few"), key)) == []
    assert (await http.post("/generate", json=JOB, headers=as_(farm, "plain"))).status_code == 202, "B is accepted"

    done = accepted[0].json()["task_id"]
    await publish_status(done, 1, TaskState.SUCCESS, owner=owner_of(farm, "few"))
    deadline = time.monotonic() + 20
    while (again := await http.post("/generate", json=JOB, headers=as_(farm, "few"))).status_code == 429:
        assert time.monotonic() < deadline, "the finished job never freed its slot"
        await asyncio.sleep(0.1)
    assert again.status_code == 202


async def test_concurrent_submissions_never_overshoot_the_unfinished_limit(farm: Farm, http: httpx.AsyncClient) -> None:
    """The check and the pending row are one step per request: 10 at once from a fresh 2-job tenant admit 2."""
    record, secret = ApiKeyRecord.issue(f"q-burst-{new_task_id()[2:8]}", Role.USER, KeyLimits(burst=50))
    await publish_key(farm.settings, record)
    headers = {"Authorization": f"Bearer {secret}"}
    for _ in range(200):  # the key reaches the gateway within a fetch
        if (await http.get("/loras", headers=headers)).status_code == 200:
            break
        await asyncio.sleep(0.05)
    answers = await asyncio.gather(*(http.post("/generate", json=inline_cover(), headers=headers) for _ in range(10)))
    assert sorted(r.status_code for r in answers) == [202] * 2 + [429] * 8


async def test_a_request_over_the_cost_ceiling_is_a_400(farm: Farm, http: httpx.AsyncClient, tmp_path: Path) -> None:
    assert (await http.post("/generate", json=JOB, headers=as_(farm, "cheap"))).status_code == 202
    before = stored_files(farm)
    key = f"cost-{new_task_id()}"
    costly = {**inline_cover(), "duration": 5, "batch_size": 3}  # 5 × 3 × 8 = 120 > 100
    body = assert_refused(
        await http.post("/generate", json=costly, headers=as_(farm, "cheap", key)), 400, "cost", retry_after=False
    )
    assert "costs 120 (duration × takes × steps)" in body["detail"] and "at most 100" in body["detail"]
    assert await published(farm, task_id_for(owner_of(farm, "cheap"), key)) == []
    with tone_dataset(tmp_path / "ok.zip").open("rb") as f:  # 11 steps × TRAINING_STEP_COST 10 = 110 > 100
        training = await http.post(
            "/train/lora",
            files={"file": ("ok.zip", f, "application/zip")},
            data={"style_name": "Too long", "steps": "11"},
            headers=as_(farm, "cheap"),
        )
    assert "steps × TRAINING_STEP_COST 10" in assert_refused(training, 400, "cost", retry_after=False)["detail"]
    assert stored_files(farm) == before, "neither the inline audio nor the dataset zip is stored"


async def test_a_priority_the_key_does_not_allow_is_a_403(farm: Farm, http: httpx.AsyncClient) -> None:
    key = f"prio-{new_task_id()}"
    refused = await http.post("/generate", json={**JOB, "priority": "high"}, headers=as_(farm, "plain", key))
    body = assert_refused(refused, 403, "priority", retry_after=False)
    assert body["detail"] == "priority: 'high' is not allowed for this key (allowed: normal, batch)"
    assert await published(farm, task_id_for(owner_of(farm, "plain"), key)) == []
    assert (await http.post("/generate", json=JOB, headers=as_(farm, "vip"))).status_code == 403, "vip: high only"
    accepted = await http.post("/generate", json={**JOB, "priority": "high"}, headers=as_(farm, "vip"))
    assert accepted.status_code == 202, accepted.text
    [event] = await published(farm, accepted.json()["task_id"])
    assert isinstance(event, GenerationRequested) and event.priority is Priority.HIGH


async def test_a_full_farm_queue_is_a_503_with_retry_after_from_the_drain_rate(
    farm: Farm, http: httpx.AsyncClient
) -> None:
    try:
        farm.backlog.queued, farm.backlog.rate = MAX_QUEUED + 20, 2.0  # 20 too many at 2 jobs/s: 10 s
        key = f"full-{new_task_id()}"
        refused = await http.post("/generate", json=inline_cover(), headers=as_(farm, "plain", key))
        body = assert_refused(refused, 503, "backlog", retry_after=True)
        assert refused.headers["Retry-After"] == "10" and f"{MAX_QUEUED + 20} jobs are queued" in body["detail"]
        assert_refused(await http.post("/generate", json=JOB, headers=as_(farm, "other")), 503, "backlog", True)
        assert await published(farm, task_id_for(owner_of(farm, "plain"), key)) == []
        farm.backlog.rate = None  # no job finished lately: a fixed wait
        unknown_rate = await http.post("/generate", json=JOB, headers=as_(farm, "plain"))
        assert unknown_rate.status_code == 503 and unknown_rate.headers["Retry-After"] == "30"
        farm.backlog.queued = MAX_QUEUED  # at the limit, not over it
        assert (await http.post("/generate", json=JOB, headers=as_(farm, "plain"))).status_code == 202
    finally:
        farm.backlog.queued = farm.backlog.rate = None


async def test_the_unfinished_count_is_rebuilt_from_the_status_topic_on_another_replica(
    farm: Farm, http: httpx.AsyncClient, publish_status: PublishStatus
) -> None:
    """A second gateway (a replica, or this one after a restart) counts the jobs `streams` reported as pending."""
    owner = f"q-carol-{new_task_id()[2:8]}"
    record, secret = ApiKeyRecord.issue(owner, Role.USER, KeyLimits(max_unfinished=2))
    await publish_key(farm.settings, record)
    for _ in range(2):
        await publish_status(new_task_id(), 1, TaskState.RUNNING, owner=owner)
    second = serve(farm.settings)
    url = await asyncio.to_thread(next, second)
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as replica:
            headers = {"Authorization": f"Bearer {secret}"}
            assert_refused(await replica.post("/generate", json=JOB, headers=headers), 429, "unfinished", True)
    finally:
        await asyncio.to_thread(second.close)
