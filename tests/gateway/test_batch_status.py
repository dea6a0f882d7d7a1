"""`GET /tasks` on a real gateway with AUTH_MODE=keys: by ids (someone else's and unknown ids simply absent)
and by state (the caller's own, an admin's everyone's, newest first, cursor pages), fed by status snapshots
on the status topic as `streams` publishes them."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from acefarm.devtools.keys_cli import publish_key
from schemas.keys import ApiKeyRecord, Role
from schemas.status import TaskState
from tests.gateway.conftest import PublishStatus, gateway_settings, serve
from tests.support.ids import new_task_id

T0 = datetime.now(UTC) - timedelta(hours=1)


@dataclass(frozen=True)
class Tenants:
    """A keys-mode gateway, two users (owners unique to this module) and an admin."""

    url: str
    alice: str
    bob: str
    admin: str
    owners: dict[str, str]


@pytest.fixture(scope="module")
def tenants(kafka_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tenants]:
    settings = gateway_settings(kafka_env, tmp_path_factory.mktemp("batch-data"), auth_mode="keys")
    suffix = uuid.uuid4().hex[:6]
    owners = {"alice": f"alice-{suffix}", "bob": f"bob-{suffix}", "admin": f"root-{suffix}"}
    secrets: dict[str, str] = {}
    for name, owner in owners.items():
        record, secrets[name] = ApiKeyRecord.issue(owner, Role.ADMIN if name == "admin" else Role.USER)
        asyncio.run(publish_key(settings, record))
    for url in serve(settings):
        yield Tenants(url, secrets["alice"], secrets["bob"], secrets["admin"], owners)


@pytest.fixture
async def http(tenants: Tenants) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=tenants.url, timeout=30) as client:
        yield client


async def listing(http: httpx.AsyncClient, secret: str, **params: Any) -> dict[str, Any]:
    """GET /tasks as `secret`'s owner; it must answer 200 (the key may take a moment to arrive)."""
    deadline = time.monotonic() + 10
    while (response := await http.get("/tasks", params=params, headers={"X-API-Key": secret})).status_code == 401:
        assert time.monotonic() < deadline, response.text
        await asyncio.sleep(0.1)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def every_page(http: httpx.AsyncClient, secret: str, **params: Any) -> list[str]:
    """The task ids of every page of a listing, following `next_cursor`."""
    ids: list[str] = []
    cursor: str | None = None
    while True:
        page = await listing(http, secret, **params, **({"cursor": cursor} if cursor else {}))
        assert len(page["tasks"]) <= params.get("limit", 50)
        ids += [task["task_id"] for task in page["tasks"]]
        if (cursor := page["next_cursor"]) is None:
            return ids


async def test_batch_status_by_ids_and_by_state_answers_only_to_owners(
    tenants: Tenants, http: httpx.AsyncClient, publish_status: PublishStatus
) -> None:
    alice, bob = tenants.owners["alice"], tenants.owners["bob"]
    states = [TaskState.PENDING, TaskState.RUNNING, TaskState.PENDING, TaskState.SUCCESS, TaskState.PENDING]
    mine = [new_task_id() for _ in states]
    theirs = [new_task_id() for _ in range(2)]
    for minute, (task_id, state) in enumerate(zip(mine, states, strict=True)):
        await publish_status(task_id, 1, state, owner=alice, created_at=T0 + timedelta(minutes=minute))
    for minute, task_id in enumerate(theirs):
        await publish_status(task_id, 1, TaskState.PENDING, owner=bob, created_at=T0 + timedelta(minutes=minute))

    asked = ",".join([mine[1], theirs[0], new_task_id(), mine[0], mine[1]])
    deadline = time.monotonic() + 20
    while len((await listing(http, tenants.admin, ids=asked))["tasks"]) < 3:
        assert time.monotonic() < deadline, "the gateway never saw the statuses"
        await asyncio.sleep(0.1)
    by_ids = await listing(http, tenants.alice, ids=asked)
    assert [t["task_id"] for t in by_ids["tasks"]] == [mine[1], mine[0]]  # in the order asked, once each
    assert by_ids["next_cursor"] is None and by_ids["tasks"][0]["events_url"]
    assert [t["task_id"] for t in (await listing(http, tenants.admin, ids=asked))["tasks"]] == [
        mine[1],
        theirs[0],
        mine[0],
    ]
    assert [t["task_id"] for t in (await listing(http, tenants.bob, ids=asked))["tasks"]] == [theirs[0]]
    pending_only = await listing(http, tenants.alice, ids=asked, status="pending")
    assert [t["task_id"] for t in pending_only["tasks"]] == [mine[0]]

    pending = [mine[4], mine[2], mine[0]]
    assert await every_page(http, tenants.alice, status="pending", limit=2) == pending
    assert await every_page(http, tenants.alice, status="pending,running", limit=1) == [*pending[:2], mine[1], mine[0]]
    assert await every_page(http, tenants.alice, limit=100) == mine[::-1]
    assert await every_page(http, tenants.bob, status="pending") == theirs[::-1]
    everyone = await every_page(http, tenants.admin, status="pending", limit=100)
    assert {*pending, *theirs} <= set(everyone)
    assert await every_page(http, tenants.admin, status="pending", mine="true") == []

    await publish_status(mine[0], 2, TaskState.SUCCESS, owner=alice, created_at=T0)
    deadline = time.monotonic() + 20
    while mine[0] in await every_page(http, tenants.alice, status="pending"):
        assert time.monotonic() < deadline, "the finished task stayed in the pending listing"
        await asyncio.sleep(0.1)
    assert await every_page(http, tenants.alice, status="success") == [mine[3], mine[0]]


async def test_bad_listing_requests_say_what_to_fix(tenants: Tenants, http: httpx.AsyncClient) -> None:
    key = {"X-API-Key": tenants.alice}
    await listing(http, tenants.alice)
    assert (await http.get("/tasks")).status_code == 401
    cases = [
        ({"status": "done"}, "status: done is not a state"),
        ({"ids": ",".join(f"t{n}" for n in range(101))}, "ids: at most 100"),
        ({"cursor": "nonsense"}, "cursor: not a cursor"),
        ({"limit": "101"}, "limit"),
        ({"limit": "0"}, "limit"),
    ]
    for params, message in cases:
        response = await http.get("/tasks", params=params, headers=key)
        assert response.status_code == 400, (params, response.text)
        assert message in response.text, (params, response.text)
