"""`GET /files/{key}`: content types, Range, traversal 404s on local storage; presigned redirects on S3."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from acefarm.infra.storage import S3Storage
from gateway.files import PRESIGNED_REDIRECT_S
from schemas.status import StoredFile, TaskState
from tests.gateway.conftest import PublishStatus, gateway_settings, result_file, serve, tone
from tests.support.ids import new_task_id


@pytest.mark.parametrize(
    ("name", "content_type"),
    [
        ("take-0.wav", "audio/wav"),
        ("take-0.flac", "audio/flac"),
        ("take-1.mp3", "audio/mpeg"),
        ("take-0.opus", "audio/ogg; codecs=opus"),
        ("take-0.m4a", "audio/mp4"),
        ("take-0.ogg", "audio/ogg"),
    ],
)
async def test_results_are_served_with_their_content_type(
    client: httpx.AsyncClient, data_dir: Path, name: str, content_type: str
) -> None:
    key = f"outputs/{new_task_id()}/{name}"
    payload = tone(seconds=0.2)
    await result_file(data_dir, key, payload, content_type)
    response = await client.get(f"/files/{key}")
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert response.headers["content-length"] == str(len(payload))
    assert response.headers["accept-ranges"] == "bytes"
    assert response.content == payload


async def test_range_requests_for_seeking(client: httpx.AsyncClient, data_dir: Path) -> None:
    key = f"outputs/{new_task_id()}/take-0.wav"
    payload = bytes(range(256)) * 40
    await result_file(data_dir, key, payload, "audio/wav")
    cases = {
        "bytes=0-99": (0, 99),
        "bytes=10000-": (10000, 10239),
        "bytes=-40": (10200, 10239),
        "bytes=10200-99999": (10200, 10239),
    }
    for header, (start, end) in cases.items():
        response = await client.get(f"/files/{key}", headers={"Range": header})
        assert response.status_code == 206, header
        assert response.headers["content-range"] == f"bytes {start}-{end}/{len(payload)}"
        assert response.headers["content-length"] == str(end - start + 1)
        assert response.content == payload[start : end + 1]
    outside = await client.get(f"/files/{key}", headers={"Range": "bytes=20000-"})
    assert outside.status_code == 416
    assert outside.headers["content-range"] == f"bytes */{len(payload)}"
    multi = await client.get(f"/files/{key}", headers={"Range": "bytes=0-1,5-6"})
    assert multi.status_code == 200 and multi.content == payload


@pytest.mark.parametrize(
    "path",
    [
        "/files/outputs/missing/take-0.wav",
        "/files/../pyproject.toml",
        "/files/outputs/../../etc/passwd",
        "/files/outputs/%2e%2e/%2e%2e/etc/passwd",
        "/files/outputs%2F..%2F..%2Fetc%2Fpasswd",
        "/files//etc/passwd",
        "/files/outputs/.hidden.ctype",
        "/files/inputs/uploads/anything.wav",
        "/files/loras/x/manifest.json",
        "/files/",
    ],
)
async def test_anything_else_is_404(client: httpx.AsyncClient, data_dir: Path, path: str) -> None:
    (data_dir.parent / "secret.txt").write_text("nope")
    response = await client.get(path)
    assert response.status_code == 404, (path, response.status_code, response.text[:200])
    assert b"nope" not in response.content


async def test_traversal_through_a_symlink_is_404(client: httpx.AsyncClient, data_dir: Path) -> None:
    outside = data_dir.parent / "outside.wav"
    outside.write_bytes(b"RIFF-secret")
    link_dir = data_dir / "outputs" / new_task_id()
    link_dir.mkdir(parents=True)
    (link_dir / "take-0.wav").symlink_to(outside)
    response = await client.get(f"/files/{link_dir.relative_to(data_dir)}/take-0.wav")
    assert response.status_code == 404


@pytest.fixture(scope="module")
def s3_gateway(kafka_env: dict[str, str], s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second gateway whose storage is the moto S3 server."""
    settings = gateway_settings(
        kafka_env,
        tmp_path_factory.mktemp("s3-gw"),
        storage_backend="s3",
        s3_endpoint_url=s3_endpoint,
        storage_bucket="gateway-tests",
        public_base_url="https://music.example.com/",
    )
    yield from serve(settings)


async def test_s3_files_redirect_to_a_presigned_url_that_downloads(
    s3_gateway: str, s3_endpoint: str, publish_status: PublishStatus
) -> None:
    storage = await S3Storage("gateway-tests", endpoint_url=s3_endpoint).start()
    task_id = new_task_id()
    payload = tone(seconds=0.3, fmt="FLAC")
    try:
        info = await storage.put_bytes(f"outputs/{task_id}/take-0.flac", payload, "audio/flac")
    finally:
        await storage.close()
    files = [StoredFile(key=info.key, content_type="audio/flac", size_bytes=info.size)]
    await publish_status(task_id, 1, TaskState.SUCCESS, files=files)
    async with httpx.AsyncClient(base_url=s3_gateway, timeout=30) as client:
        for _ in range(200):
            status = await client.get(f"/status/{task_id}")
            if status.status_code == 200:
                break
        file_url = status.json()["file_url"]
        assert file_url.startswith(f"https://music.example.com/files/outputs/{task_id}/take-0.flac?exp=")
        redirect = await client.get(f"/files/outputs/{task_id}/take-0.flac")
        assert redirect.status_code == 307
        location = redirect.headers["location"]
        assert location.startswith(s3_endpoint) and "Signature" in location
        assert f"X-Amz-Expires={PRESIGNED_REDIRECT_S}" in location, "the redirect is short-lived"
        download = await client.get(f"/files/outputs/{task_id}/take-0.flac", follow_redirects=True)
        assert download.status_code == 200
        assert download.content == payload
        assert download.headers["content-type"] == "audio/flac"
        assert (await client.get(f"/files/outputs/{task_id}/take-9.flac")).status_code == 404
        assert (await client.get("/files/outputs/../../etc/passwd")).status_code == 404


async def test_s3_gateway_stores_uploads_in_the_bucket(s3_gateway: str, s3_endpoint: str) -> None:
    audio = tone(seconds=0.5)
    async with httpx.AsyncClient(base_url=s3_gateway, timeout=30) as client:
        upload = await client.post("/uploads", files={"file": ("a.wav", audio, "audio/wav")})
        assert upload.status_code == 201, upload.text
        key = upload.json()["key"]
        accepted = await client.post(
            "/generate", json={"prompt": "x", "duration": 3, "task_type": "cover", "src_audio_key": key}
        )
        assert accepted.status_code == 202, accepted.text
    storage = S3Storage("gateway-tests", endpoint_url=s3_endpoint)
    try:
        assert await storage.get_bytes(key) == audio
    finally:
        await storage.close()
