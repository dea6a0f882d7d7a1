"""A dataset check stops when its client leaves: the child process is killed and the check's slot is free again.

A real gateway (one check at a time) gets `POST /train/lora` with a zip whose check takes seconds (many
compressed tracks to decode); the client hangs up once the check's child process runs.
"""

from __future__ import annotations

import io
import socket
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import psutil
import pytest

from tests.gateway.conftest import gateway_settings, serve
from tests.lora.zips import tone

TRACKS = 50
TRACK_SECONDS = 120.0
"""Fifty two-minute tracks: checking them takes far longer than `STOP_S` (about 20 s on a loaded laptop)."""
WAIT_S = 60.0
STOP_S = 3.0
"""How soon after the client hangs up its check process must be gone."""


@pytest.fixture(scope="module")
def one_check_url(kafka_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A gateway that runs one dataset check at a time, with time enough for a slow one."""
    data = tmp_path_factory.mktemp("disconnect-data")
    yield from serve(gateway_settings(kafka_env, data, dataset_check_concurrency=1, dataset_check_timeout_s=600))


def slow_dataset() -> bytes:
    """A valid zip of `TRACKS` MP3 tones of `TRACK_SECONDS`: decoding all of them takes the check a while."""
    track = tone(TRACK_SECONDS, 330.0, 44_100, "MP3")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(TRACKS):
            archive.writestr(f"tones/tone{i:02d}.mp3", track)
    return buffer.getvalue()


def raw_request(url: str, zip_bytes: bytes) -> bytes:
    """The bytes of a `POST /train/lora` carrying `zip_bytes`, as httpx would send them."""
    request = httpx.Request(
        "POST",
        f"{url}/train/lora",
        files={"file": ("slow.zip", zip_bytes, "application/zip")},
        data={"style_name": "Slow"},
    )
    body = request.read()
    head = ["POST /train/lora HTTP/1.1", f"Host: {urlsplit(url).netloc}", "Connection: close"]
    head += [
        f"{name}: {value}" for name, value in request.headers.items() if name.lower() not in ("host", "connection")
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def dataset_checks_running() -> list[psutil.Process]:
    """The dataset-check processes (children of this process' multiprocessing forkserver)."""
    found: list[psutil.Process] = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "forkserver" in " ".join(child.cmdline()):
                found.extend(child.children())
        except psutil.NoSuchProcess:
            continue
    return found


def wait_for(condition: Callable[[], object], what: str) -> None:
    """Poll `condition()` until true, failing after `WAIT_S`."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_check_stops_when_the_client_leaves_and_frees_its_slot(one_check_url: str, tmp_path: Path) -> None:
    assert not dataset_checks_running()
    parts = urlsplit(one_check_url)
    with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80)) as client:
        client.sendall(raw_request(one_check_url, slow_dataset()))
        wait_for(dataset_checks_running, "the dataset check never started")
        running = dataset_checks_running()
    hung_up = time.monotonic()
    # the client has hung up mid-check: the child is killed, not left decoding for nobody
    wait_for(lambda: not any(_alive(p) for p in running), "the check kept running")
    assert time.monotonic() - hung_up < STOP_S, "the check ran on after the client left"
    wait_for(lambda: not dataset_checks_running(), "a dataset check process is left behind")
    # the slot is free: the next upload is checked (400: not a zip), not refused with 503
    response = httpx.post(
        f"{one_check_url}/train/lora",
        files={"file": ("bad.zip", b"not a zip at all", "application/zip")},
        data={"style_name": "Next"},
        timeout=60,
    )
    assert response.status_code == 400, response.text
