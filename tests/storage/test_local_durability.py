"""Local storage's fsync choice: durable writes are flushed, attempt-style writes are not, and either
survives its writer being killed (the page cache keeps it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from acefarm.infra.storage import LocalStorage


async def test_only_durable_writes_are_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    store = LocalStorage(tmp_path)
    await store.put_bytes("outputs/t/take-0.wav", b"RIFF", "audio/wav")
    assert len(synced) == 1, "the object; its content-type sidecar is never fsync'd"
    await store.put_bytes("attempts/t/generation.json", b"{}", "application/json", durable=False)
    assert len(synced) == 1


async def test_a_lost_or_empty_sidecar_falls_back_to_the_type_the_name_implies(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)
    await store.put_bytes("outputs/t/take-0.flac", b"fLaC", "audio/flac")
    sidecar = tmp_path / "outputs/t/.take-0.flac.ctype"
    sidecar.write_text("")  # what a machine crash can leave of a sidecar that was never flushed
    info = await store.stat("outputs/t/take-0.flac")
    assert info is not None and info.content_type == "audio/flac"
    sidecar.unlink()
    info = await store.stat("outputs/t/take-0.flac")
    assert info is not None and info.content_type == "audio/flac"


async def test_a_type_the_name_implies_needs_no_sidecar_and_replaces_a_stale_one(tmp_path: Path) -> None:
    store = LocalStorage(tmp_path)
    sidecar = tmp_path / "attempts/t/.generation.json.ctype"
    await store.put_bytes("attempts/t/generation.json", b"{}", "text/plain")
    assert sidecar.read_text() == "text/plain"
    await store.put_bytes("attempts/t/generation.json", b"{}", "application/json", durable=False)
    assert not sidecar.exists()
    info = await store.stat("attempts/t/generation.json")
    assert info is not None and info.content_type == "application/json"


_WRITE_THEN_DIE = """
import asyncio, os, signal, sys
from acefarm.infra.storage import LocalStorage
asyncio.run(LocalStorage(sys.argv[1]).put_bytes("attempts/t/generation.json", b'{"attempts": 1}',
                                                "application/json", durable=False))
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_write_that_is_not_durable_survives_its_process_being_killed(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", _WRITE_THEN_DIE, str(tmp_path)], check=False, timeout=60)
    assert done.returncode == -signal.SIGKILL
    assert (tmp_path / "attempts/t/generation.json").read_bytes() == b'{"attempts": 1}'
