"""Retries against a real HTTP server on loopback that refuses first: Retry-After is honoured, the
Idempotency-Key stays the same, and only safe requests are repeated. Plus the pure helpers."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path

import pytest

from acefarm.client import AcefarmError, Client, RetryPolicy
from acefarm.client.config import ClientConfig, parse_retry_after
from acefarm.client.files import result_paths
from acefarm.client.sse import EventDecoder, ServerEvent
from acefarm.devtools.broker import free_port

ACCEPTED = json.dumps({"task_id": "t1", "status": "pending", "lora_id": None}).encode()


class Script:
    """What the server answers, in order (the last repeats), and what it was sent."""

    def __init__(self, *answers: tuple[int, dict[str, str], bytes]) -> None:
        self.answers = list(answers)
        self.seen: list[tuple[str, dict[str, str], float]] = []


@pytest.fixture
def server() -> Iterator[tuple[str, Script]]:
    script = Script((202, {}, ACCEPTED))

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            script.seen.append((f"{self.command} {self.path}", dict(self.headers.items()), time.monotonic()))
            status, headers, body = script.answers.pop(0) if len(script.answers) > 1 else script.answers[0]
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *_: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", script
    finally:
        httpd.shutdown()


def _busy(status: int, retry_after: str | None = None) -> tuple[int, dict[str, str], bytes]:
    body = json.dumps({"status_code": status, "detail": "busy, retry"}).encode()
    return status, ({"Retry-After": retry_after} if retry_after else {}), body


def test_submit_waits_as_retry_after_says_and_keeps_its_idempotency_key(server: tuple[str, Script]) -> None:
    url, script = server
    script.answers = [_busy(429, "1"), _busy(409), _busy(503), (202, {}, ACCEPTED)]
    with Client(url, "k", retry=RetryPolicy(backoff_s=0.05)) as client:
        accepted = client.submit(prompt="x", duration=5)
    assert accepted.task_id == "t1" and len(script.seen) == 4
    assert {headers["Idempotency-Key"] for _, headers, _ in script.seen} == {script.seen[0][1]["Idempotency-Key"]}
    assert script.seen[1][2] - script.seen[0][2] >= 0.95, "waited the Retry-After second"
    assert all(headers["Authorization"] == "Bearer k" for _, headers, _ in script.seen)


def test_retries_stop_at_the_limit_with_the_apis_message(server: tuple[str, Script]) -> None:
    url, script = server
    script.answers = [_busy(503)]
    with Client(url, retry=RetryPolicy(retries=2, backoff_s=0.01)) as client, pytest.raises(AcefarmError) as error:
        client.status("t1")
    assert error.value.status_code == 503 and error.value.detail == "busy, retry" and len(script.seen) == 3


def test_an_upload_is_not_repeated_after_a_server_error(server: tuple[str, Script], tmp_path: Path) -> None:
    url, script = server
    script.answers = [_busy(500)]
    audio = tmp_path / "a.wav"
    audio.write_bytes(b"RIFF")
    with Client(url, retry=RetryPolicy(backoff_s=0.01)) as client, pytest.raises(AcefarmError) as error:
        client.upload(audio)
    assert error.value.status_code == 500 and len(script.seen) == 1


def test_an_unreachable_gateway_is_an_error_without_status() -> None:
    policy = RetryPolicy(retries=1, backoff_s=0.01)
    with Client(f"http://127.0.0.1:{free_port()}", retry=policy) as client, pytest.raises(AcefarmError) as error:
        client.status("t1")
    assert error.value.status_code is None and "ConnectError" in str(error.value)


def test_url_and_key_come_from_arguments_then_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACEFARM_URL", "http://farm.example:9000/")
    monkeypatch.setenv("ACEFARM_API_KEY", "from-env")
    config = ClientConfig.resolve(None, None, 30.0, None)
    assert (config.url, config.api_key) == ("http://farm.example:9000", "from-env")
    assert ClientConfig.resolve("http://other:1", "given", 30.0, None).api_key == "given"
    assert config.auth_headers("/files/x") == {"Authorization": "Bearer from-env"}
    assert config.auth_headers("https://bucket.s3.example/x") == {}, "the key never goes to another origin"


def test_retry_after_parsing_and_backoff_bounds() -> None:
    assert parse_retry_after("3") == 3.0
    assert 9 <= (parse_retry_after(formatdate(time.time() + 10, usegmt=True)) or 0) <= 10
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    policy = RetryPolicy(backoff_s=1, backoff_max_s=4, retry_after_max_s=30)
    assert all(0.5 <= policy.delay(0) <= 1 for _ in range(20))
    assert all(2 <= policy.delay(5) <= 4 for _ in range(20))
    assert policy.delay(0, "600") == 30


def test_event_decoder_follows_the_sse_rules() -> None:
    decoder = EventDecoder()
    lines = [": keep-alive", "", "id: 3", "event: running", 'data: {"a":', "data: 1}", "", "data:x", ""]
    events = [e for line in lines if (e := decoder.feed(line)) is not None]
    assert events == [ServerEvent("running", '{"a":\n1}', "3"), ServerEvent("message", "x", "3")]


def test_result_paths_for_a_file_or_a_directory(tmp_path: Path) -> None:
    urls = ["/files/outputs/t9/take-0.mp3?sig=1", "/files/outputs/t9/take-1.mp3?sig=2"]
    assert result_paths(tmp_path, urls) == [tmp_path / "t9-take-0.mp3", tmp_path / "t9-take-1.mp3"]
    assert result_paths(tmp_path / "song.mp3", urls) == [tmp_path / "song.mp3", tmp_path / "song-1.mp3"]
    assert result_paths(f"{tmp_path}/new/", urls)[0] == tmp_path / "new" / "t9-take-0.mp3", "a trailing / means a dir"
