"""The fast path of `POST /generate` (`gateway.fast_submit`) answers exactly as the Litestar handler does.

A plain `application/json` request takes the fast path; the same request with `; charset=utf-8` in its
content type goes through the Litestar handler. Both must give the same status, headers and body.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from litestar.datastructures import Headers
from litestar.types import ReceiveMessage

from gateway.fast_submit import idempotency_key, parse_body, read_small_body, replaying
from schemas.generation import GenerateRequest

GOOD = {"prompt": "fast path", "duration": 3.0}
FAST = {"Content-Type": "application/json"}
FRAMEWORK = {"Content-Type": "application/json; charset=utf-8"}


async def post(client: httpx.AsyncClient, body: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
    """POST `body` as JSON to /generate with exactly these headers."""
    return await client.post("/generate", content=httpx.Request("POST", "/", json=body).content, headers=headers)


def shape(response: httpx.Response) -> tuple[int, dict[str, str], str]:
    """(status, headers, body) with the task id replaced, and the headers that differ per connection dropped."""
    task_id = response.json().get("task_id", "")
    headers = {k: v.replace(task_id, "ID") for k, v in response.headers.items() if k not in ("date", "server")}
    return response.status_code, headers, response.text.replace(task_id, "ID") if task_id else response.text


@pytest.mark.parametrize("first, second", [(FAST, FRAMEWORK), (FRAMEWORK, FAST)])
async def test_both_paths_accept_and_replay_alike(
    client: httpx.AsyncClient, first: dict[str, str], second: dict[str, str]
) -> None:
    keys = [{"Idempotency-Key": uuid.uuid4().hex} for _ in range(2)]
    new_first = await post(client, GOOD, first | keys[0])
    replay_second = await post(client, GOOD, second | keys[0])
    new_second = await post(client, GOOD, second | keys[1])
    replay_first = await post(client, GOOD, first | keys[1])
    assert new_first.status_code == 202 and replay_second.headers["Idempotent-Replayed"] == "true"
    assert replay_second.json()["task_id"] == new_first.json()["task_id"]
    assert shape(new_first) == shape(new_second)
    assert shape(replay_first) == shape(replay_second)


async def test_an_error_of_the_submission_answers_alike(client: httpx.AsyncClient) -> None:
    key = {"Idempotency-Key": uuid.uuid4().hex}
    assert (await post(client, GOOD, FAST | key)).status_code == 202
    other = {**GOOD, "duration": 4.0}
    fast, framework = await post(client, other, FAST | key), await post(client, other, FRAMEWORK | key)
    assert fast.status_code == 422 and "already used with a different request body" in fast.json()["detail"]
    assert shape(fast) == shape(framework)
    assert fast.headers["x-content-type-options"] == "nosniff"


async def test_a_refused_body_read_by_the_fast_path_still_says_what_to_fix(client: httpx.AsyncClient) -> None:
    response = await post(client, {**GOOD, "duration": "long"}, FAST)
    assert response.status_code == 400
    assert response.json()["detail"] == "duration: must be a number, not true, false or text"


def test_idempotency_key_is_usable_only_alone_and_within_limits() -> None:
    assert idempotency_key(Headers({})) == (True, None)
    assert idempotency_key(Headers({"idempotency-key": "k"})) == (True, "k")
    assert idempotency_key(Headers([(b"idempotency-key", b"a"), (b"idempotency-key", b"b")]))[0] is False
    assert idempotency_key(Headers({"idempotency-key": ""}))[0] is False
    assert idempotency_key(Headers({"idempotency-key": "k" * 256}))[0] is False


async def test_a_body_read_in_part_is_handed_on_whole() -> None:
    chunks: list[ReceiveMessage] = [
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.request", "body": b"cd", "more_body": True},
        {"type": "http.request", "body": b"ef", "more_body": False},
    ]

    def source() -> Any:
        pending = list(chunks)

        async def receive() -> ReceiveMessage:
            return pending.pop(0)

        return receive

    assert (await read_small_body(source(), 6))[1] == b"abcdef"
    receive = source()
    read, body = await read_small_body(receive, 3)
    assert body is None and len(read) == 2
    again = replaying(read, receive)
    assert [(await again())["body"] for _ in range(3)] == [b"ab", b"cd", b"ef"]


def test_the_body_is_validated_as_the_handler_would() -> None:
    good = {"prompt": "x", "duration": 2}
    assert parse_body(b'{"prompt": "x", "duration": 2}') == GenerateRequest.model_validate(good)
    assert parse_body(b'{"prompt": "x", "duration": true}') is None
    assert parse_body(b"[1, 2]") is None
    assert parse_body(b"{not json") is None
