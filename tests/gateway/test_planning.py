"""The gateway's LM routes on a real server and broker: planning-topic routing, /sample, /format, /understand."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from schemas import topics
from schemas.events import GenerationRequested, PlanningRequested
from schemas.planning import PlanMode
from tests.gateway.conftest import events_for, gateway_settings, serve, tone


async def test_thinking_goes_to_the_planner_and_given_codes_straight_to_the_dit(
    client: httpx.AsyncClient, kafka_env: dict[str, str]
) -> None:
    bootstrap = kafka_env["KAFKA_BOOTSTRAP_SERVERS"]
    thinking = await client.post("/generate", json={"prompt": "p", "duration": 5, "thinking": True})
    coded = await client.post(
        "/generate", json={"prompt": "p", "duration": 5, "thinking": True, "audio_codes": "<|audio_code_3|>"}
    )
    assert thinking.status_code == coded.status_code == 202
    planned = await events_for(bootstrap, topics.PLANNING_REQUESTS, thinking.json()["task_id"])
    assert [type(e) for _, e in planned] == [PlanningRequested]
    assert planned[0][1].mode is PlanMode.GENERATE and planned[0][1].params.thinking  # type: ignore[union-attr]
    direct = await events_for(bootstrap, topics.GENERATION_REQUESTS, coded.json()["task_id"])
    assert [type(e) for _, e in direct] == [GenerationRequested]
    bad = await client.post("/generate", json={"prompt": "p", "duration": 5, "audio_codes": "not codes"})
    assert bad.status_code == 400 and "audio_codes" in bad.text


async def test_sample_format_and_understand_queue_lm_jobs(client: httpx.AsyncClient, kafka_env: dict[str, str]) -> None:
    bootstrap = kafka_env["KAFKA_BOOTSTRAP_SERVERS"]
    sample = await client.post("/sample", json={"query": "a soft love song", "generate": True})
    fmt = await client.post("/format", json={"prompt": "rock", "lyrics": "la", "bpm": 120})
    audio = base64.b64encode(tone(0.5)).decode()
    understand = await client.post("/understand", json={"audio": audio})
    for response, mode in ((sample, PlanMode.SAMPLE), (fmt, PlanMode.FORMAT), (understand, PlanMode.UNDERSTAND)):
        assert response.status_code == 202, response.text
        task_id = response.json()["task_id"]
        ((_, event),) = await events_for(bootstrap, topics.PLANNING_REQUESTS, task_id)
        assert isinstance(event, PlanningRequested) and event.mode is mode
        status = (await client.get(f"/status/{task_id}")).json()
        assert status["kind"] == mode.value
    event = (await events_for(bootstrap, topics.PLANNING_REQUESTS, understand.json()["task_id"]))[0][1]
    assert event.understand.audio_key.startswith("inputs/")  # type: ignore[union-attr]
    neither = await client.post("/understand", json={})
    assert neither.status_code == 400


@pytest.fixture(scope="module")
def no_planner_url(kafka_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data: Path = tmp_path_factory.mktemp("no-planner")
    yield from serve(gateway_settings(kafka_env, data, planner_enabled=False, auth_mode="off"))


def test_without_a_planner_lm_requests_are_refused(no_planner_url: str) -> None:
    thinking = httpx.post(f"{no_planner_url}/generate", json={"prompt": "p", "duration": 5, "thinking": True})
    sample = httpx.post(f"{no_planner_url}/sample", json={"query": "q"})
    plain = httpx.post(f"{no_planner_url}/generate", json={"prompt": "p", "duration": 5})
    assert thinking.status_code == sample.status_code == 400 and "PLANNER_ENABLED" in thinking.text
    assert plain.status_code == 202
