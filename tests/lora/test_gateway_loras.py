"""`POST /train/lora`, `GET/DELETE /loras` on a real gateway server and the test broker."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from schemas import topics
from schemas.events import TrainingRequested
from schemas.storage_keys import manifest_key
from schemas.training import LoraManifest, TrackInfo, TrainingOptions
from tests.gateway.conftest import events_for, gateway_settings, serve
from tests.lora.conftest import TEST_LIMITS_ENV
from tests.lora.zips import tone, tone_dataset, write_zip


@pytest.fixture(scope="module")
def lora_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lora-gateway-data")


@pytest.fixture(scope="module")
def url(kafka_env: dict[str, str], lora_data: Path) -> Iterator[str]:
    limits = {k.lower(): v for k, v in TEST_LIMITS_ENV.items()}
    yield from serve(gateway_settings(kafka_env, lora_data, **limits))


def post_zip(url: str, path: Path, **fields: str) -> httpx.Response:
    with path.open("rb") as f:
        return httpx.post(
            f"{url}/train/lora",
            files={"file": (path.name, f, "application/zip")},
            data={"style_name": "Sine Waves", **fields},
            timeout=60,
        )


def test_a_good_zip_is_stored_and_queued(url: str, lora_data: Path, tmp_path: Path) -> None:
    response = post_zip(url, tone_dataset(tmp_path / "ok.zip"), rank="8", steps="20", trigger_tag="sinewave")
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["lora_id"].startswith("sine-waves-")
    assert (lora_data / "datasets" / f"{body['task_id']}.zip").is_file()
    status = httpx.get(f"{url}/status/{body['task_id']}", timeout=10).json()
    assert status["status"] == "pending" and status["kind"] == "training" and status["lora_id"] == body["lora_id"]


def _traversal(path: Path) -> Path:
    return write_zip(path, {"a.wav": tone(2), "b.wav": tone(2), "../escape.wav": tone(2)})


def _bomb(path: Path) -> Path:
    files = {"a.wav": tone(2), "b.wav": tone(2)}
    write_zip(path, files)
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("padding.bin", b"\0" * (30 << 20))
    return path


BAD_ZIPS = {
    "not a zip": (lambda p: p.write_bytes(b"this is not a zip at all") and p, "not a zip archive"),
    "path traversal": (_traversal, "../escape.wav: paths with '..'"),
    "zip bomb": (_bomb, "padding.bin: compressed"),
    "too few tracks": (lambda p: write_zip(p, {"only.wav": tone(2)}), "1 audio tracks"),
    "too many tracks": (lambda p: write_zip(p, {f"t{i}.wav": tone(2) for i in range(5)}), "at most 4"),
    "undecodable track": (
        lambda p: write_zip(p, {"a.wav": tone(2), "broken.mp3": b"\xff\xfb" + b"garbage" * 200}),
        "broken.mp3: not a readable audio file",
    ),
    "too long track": (
        lambda p: write_zip(p, {"a.wav": tone(2), "long.wav": tone(9)}),
        "long.wav: the audio lasts 9.0 s",
    ),
    "bad metadata": (
        lambda p: write_zip(p, {"a.wav": tone(2), "b.wav": tone(2), "metadata.csv": b"file,caption\nc.wav,x\n"}),
        "metadata.csv: line 2: 'c.wav' is not an audio track",
    ),
}


@pytest.mark.parametrize("case", list(BAD_ZIPS))
def test_a_bad_zip_is_rejected_naming_the_file_and_why(url: str, lora_data: Path, tmp_path: Path, case: str) -> None:
    build, message = BAD_ZIPS[case]
    before = set((lora_data / "datasets").glob("*")) if (lora_data / "datasets").exists() else set()
    response = post_zip(url, build(tmp_path / "bad.zip"))
    assert response.status_code == 400, response.text
    assert message in response.json()["detail"], response.json()["detail"]
    after = set((lora_data / "datasets").glob("*")) if (lora_data / "datasets").exists() else set()
    assert after == before, "a rejected dataset was stored"


def test_bad_options_are_rejected(url: str, tmp_path: Path) -> None:
    response = post_zip(url, tone_dataset(tmp_path / "ok.zip"), rank="0")
    assert response.status_code == 400
    assert response.json()["detail"].startswith("rank:")


def test_list_get_delete_and_generate_check(url: str, lora_data: Path) -> None:
    manifest = LoraManifest(
        lora_id="stored-style-abc123",
        style_name="Stored style",
        base_model="tiny",
        options=TrainingOptions(),
        tracks=[TrackInfo(name="a.wav", duration_s=2.0)],
        final_loss=0.5,
        steps_done=10,
        created_at=datetime.now(UTC),
        task_id="t1",
    )
    path = lora_data / manifest_key(manifest.lora_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(manifest.model_dump_json())
    listed = httpx.get(f"{url}/loras", timeout=10).json()
    assert manifest.lora_id in [m["lora_id"] for m in listed]
    assert httpx.get(f"{url}/loras/{manifest.lora_id}", timeout=10).json()["style_name"] == "Stored style"
    assert httpx.get(f"{url}/loras/unknown-style-000000", timeout=10).status_code == 404
    generate = {"prompt": "x", "duration": 5, "lora_id": manifest.lora_id}
    assert httpx.post(f"{url}/generate", json=generate, timeout=10).status_code == 202
    assert httpx.delete(f"{url}/loras/{manifest.lora_id}", timeout=10).status_code == 204
    assert httpx.get(f"{url}/loras/{manifest.lora_id}", timeout=10).status_code == 404
    rejected = httpx.post(f"{url}/generate", json=generate, timeout=10)
    assert rejected.status_code == 422 and "lora_id" in rejected.json()["detail"]


def test_zip_limits_come_from_the_settings_the_app_was_built_with(kafka_env: dict[str, str], tmp_path: Path) -> None:
    limits = {k.lower(): v for k, v in TEST_LIMITS_ENV.items()}
    settings = gateway_settings(kafka_env, tmp_path / "data", lora_max_zip_bytes=2048, **limits)
    running = serve(settings)
    url = next(running)
    try:
        over_zip_limit = write_zip(tmp_path / "big.zip", {"a.wav": tone(2), "b.wav": tone(2)})
        assert over_zip_limit.stat().st_size > 2048
        checked = post_zip(url, over_zip_limit)
        assert checked.status_code == 413
        assert checked.json()["detail"].startswith("file: the zip is larger than 2048 bytes")
        over_body_limit = tmp_path / "huge.zip"
        over_body_limit.write_bytes(b"\0" * (2048 + 2 * 1024 * 1024))
        refused = post_zip(url, over_body_limit)  # refused while reading the body: the route's limit is small too
        assert refused.status_code == 413
        assert refused.json()["detail"].startswith("body: the request is too large")
    finally:
        running.close()


@pytest.mark.parametrize(
    ("fields", "code", "start"),
    [
        ({"webhook": "http://127.0.0.1:9/x"}, 422, "webhook: 127.0.0.1 is a loopback address"),
        ({"webhook": "gopher://example.com/"}, 400, "webhook: the webhook must be an http://"),
        ({"webhook": "https://93.184.215.14/x", "webhook_events": "start,finished"}, 400, "webhook_events"),
    ],
)
def test_bad_webhook_fields_are_rejected(
    url: str, tmp_path: Path, fields: dict[str, str], code: int, start: str
) -> None:
    response = post_zip(url, tone_dataset(tmp_path / "ok.zip"), **fields)
    assert response.status_code == code, response.text
    assert response.json()["detail"].startswith(start)


async def test_the_webhook_travels_on_the_training_request(url: str, tmp_path: Path, kafka_env: dict[str, str]) -> None:
    hook = {"webhook": "https://93.184.215.14/x", "webhook_events": "progress, completed"}
    response = post_zip(url, tone_dataset(tmp_path / "ok.zip"), **hook)
    assert response.status_code == 202, response.text
    task_id = response.json()["task_id"]
    [(_, event)] = await events_for(kafka_env["KAFKA_BOOTSTRAP_SERVERS"], topics.TRAINING_REQUESTS, task_id)
    assert isinstance(event, TrainingRequested)
    assert (event.webhook, event.webhook_events) == ("https://93.184.215.14/x", ["progress", "completed"])
