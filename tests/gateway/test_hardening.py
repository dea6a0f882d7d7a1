"""Hostile requests bounce with a clear 4xx: foreign hosts, cross-site form posts, oversized bodies,
absurd Range headers, busy dataset checks; every answer carries `nosniff`; no local paths leak."""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from pydantic import ValidationError

from acefarm.infra.settings import Settings
from gateway.dataset_checks import DatasetChecks
from gateway.hardening import cross_site_form, host_allowed, parse_hosts, without_local_paths
from tests.gateway.conftest import result_file, tone
from tests.support.ids import new_task_id

DEFAULT_HOSTS = parse_hosts(Settings.model_fields["allowed_hosts"].default)


async def test_every_answer_says_nosniff(client: httpx.AsyncClient) -> None:
    for path in ("/healthz", "/status/nope", "/schema/openapi.json", "/"):
        response = await client.get(path)
        assert response.headers["x-content-type-options"] == "nosniff", path


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("localhost:8000", True),
        ("127.0.0.1", True),
        ("[::1]:8000", True),
        ("LOCALHOST", True),
        ("attacker.example:8000", False),
        ("127.0.0.1.nip.io", False),
        ("", False),
    ],
)
def test_only_allowed_hosts_are_served(host: str, allowed: bool) -> None:
    assert host_allowed(host, DEFAULT_HOSTS) is allowed
    assert host_allowed(host, parse_hosts("*")) is True


def test_subdomain_patterns() -> None:
    hosts = parse_hosts("*.music.example, api.example")
    assert host_allowed("eu.music.example:443", hosts) and host_allowed("api.example", hosts)
    assert not host_allowed("music.example.evil", hosts) and not host_allowed("evil-api.example", hosts)


async def test_a_rebound_host_name_is_400(gateway_url: str) -> None:
    """A browser page on attacker.example whose DNS now points at 127.0.0.1 sends its own Host header."""
    port = urlsplit(gateway_url).port
    with socket.create_connection(("127.0.0.1", port or 80), timeout=10) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: attacker.example\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
    assert b"ALLOWED_HOSTS" in answer


def test_cross_site_form_posts_are_recognised() -> None:
    form = {"content-type": "multipart/form-data; boundary=x", "host": "localhost:8000"}
    assert cross_site_form("POST", {**form, "sec-fetch-site": "cross-site"})
    assert cross_site_form("POST", {**form, "origin": "https://evil.example"})
    assert cross_site_form("POST", {**form, "origin": "null"})
    assert not cross_site_form("POST", {**form, "origin": "http://localhost:8000", "sec-fetch-site": "same-origin"})
    assert not cross_site_form("POST", form), "API clients send no Origin: unaffected"
    assert not cross_site_form("GET", {**form, "origin": "https://evil.example"})
    json_post = {"content-type": "application/json", "host": "localhost:8000", "origin": "https://evil.example"}
    assert not cross_site_form("POST", json_post), "JSON needs a CORS preflight, which is never granted"


async def test_a_cross_site_upload_is_403_and_a_key_client_is_not(client: httpx.AsyncClient) -> None:
    files = {"file": ("x.wav", tone(seconds=0.5), "audio/wav")}
    refused = await client.post("/uploads", files=files, headers={"Origin": "https://evil.example"})
    assert refused.status_code == 403 and "cross-site" in refused.json()["detail"]
    browser = await client.post("/uploads", files=files, headers={"Sec-Fetch-Site": "cross-site"})
    assert browser.status_code == 403
    api_client = await client.post("/uploads", files=files)
    assert api_client.status_code == 201, api_client.text


async def test_an_oversized_upload_is_413_before_its_body_is_read(gateway_url: str) -> None:
    """The Content-Length alone is refused: the server answers without waiting for the 1 GB it announces."""
    port = urlsplit(gateway_url).port
    with socket.create_connection(("127.0.0.1", port or 80), timeout=10) as conn:
        conn.sendall(
            b"POST /uploads HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 1000000000\r\n\r\n--b\r\n"
        )
        answer = conn.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


async def test_a_range_of_5000_digits_is_416(client: httpx.AsyncClient, data_dir: Path) -> None:
    key = f"outputs/{new_task_id()}/take-0.wav"
    await result_file(data_dir, key, tone(seconds=0.2), "audio/wav")
    for header in ("bytes=" + "9" * 5000 + "-", "bytes=0-" + "9" * 5000, "bytes=-" + "9" * 5000):
        response = await client.get(f"/files/{key}", headers={"Range": header})
        assert response.status_code == 416, (header[:20], response.text[:200])
        assert len(response.json()["detail"]) < 200


def test_local_paths_never_reach_clients() -> None:
    temp = Path(tempfile.gettempdir()) / "acefarm-dataset-x1" / "a.wav"
    text = f"Error opening '{temp}': System error; /data/outputs/t/take-0.wav missing; see POST /uploads"
    cleaned = without_local_paths(text)
    assert str(temp) not in cleaned and "/data/outputs" not in cleaned
    assert "'<file>'" in cleaned and cleaned.endswith("see POST /uploads")


def test_dataset_checks_beyond_the_limit_are_503_with_retry_after() -> None:
    checks = DatasetChecks(Settings(dataset_check_concurrency=1))
    checks.reserve()
    with pytest.raises(Exception) as busy:
        checks.reserve()
    assert getattr(busy.value, "status_code", None) == 503
    assert "Retry-After" in (getattr(busy.value, "headers", None) or {})
    checks.release()
    checks.reserve()


def test_presigned_urls_live_at_most_an_hour() -> None:
    assert Settings().s3_presign_expiry_s == 3600
    with pytest.raises(ValidationError):
        Settings(s3_presign_expiry_s=7 * 24 * 3600)
