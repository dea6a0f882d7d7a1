"""`validate_dataset_zip_isolated`: the check in a child process with memory and time limits."""

from __future__ import annotations

import asyncio
import io
import multiprocessing
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from acefarm.model.dataset_sandbox import validate_dataset_zip_isolated
from acefarm.model.datasets import DatasetError, DatasetLimits, validate_dataset_zip
from tests.lora.zips import tone, tone_dataset, write_zip

GB = 1 << 30


def _long_tracks(path: Path) -> Path:
    """Two ten-minute tracks of 8 kHz 8-bit mono (4.8 MB each); each decodes to 230 MB at 48 kHz stereo."""
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(8_000 * 600, dtype=np.int16), 8_000, format="WAV", subtype="PCM_U8")
    return write_zip(path, {"a.wav": buffer.getvalue(), "b.wav": buffer.getvalue()})


def _unpacked(folder: Path) -> list[Path]:
    return list(folder.glob("acefarm-dataset-*"))


@pytest.fixture
def scratch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The temporary directory the check unpacks into, to see it cleaned up (multiprocessing puts its socket
    folder there too)."""
    folder = tmp_path / "scratch"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


async def test_the_child_returns_what_the_check_in_process_returns(
    tmp_path: Path, scratch: Path, limits: DatasetLimits
) -> None:
    path = tone_dataset(tmp_path / "ok.zip")
    tracks = await validate_dataset_zip_isolated(path, limits, timeout_s=60, memory_bytes=2 * GB)
    assert tracks == validate_dataset_zip(path, limits)
    assert not _unpacked(scratch), "unpacked files were left behind"


async def test_a_dataset_error_comes_back_naming_the_file(tmp_path: Path, scratch: Path, limits: DatasetLimits) -> None:
    path = write_zip(tmp_path / "long.zip", {"a.wav": tone(2), "long.wav": tone(9)})
    with pytest.raises(DatasetError, match=r"the audio lasts 9\.0 s") as caught:
        await validate_dataset_zip_isolated(path, limits, timeout_s=60, memory_bytes=2 * GB)
    assert caught.value.file == "long.wav"
    assert not _unpacked(scratch), "unpacked files were left behind"


async def test_running_out_of_memory_is_too_large_to_check(
    tmp_path: Path, scratch: Path, limits: DatasetLimits
) -> None:
    long = replace(limits, max_track_seconds=600)
    with pytest.raises(DatasetError, match="too large to check within 512 MB of memory"):
        await validate_dataset_zip_isolated(
            _long_tracks(tmp_path / "long.zip"), long, timeout_s=60, memory_bytes=GB // 2
        )
    assert not _unpacked(scratch), "unpacked files were left behind"
    assert (
        len(
            await validate_dataset_zip_isolated(
                tone_dataset(tmp_path / "ok.zip"), long, timeout_s=60, memory_bytes=GB // 2
            )
        )
        == 3
    )


async def test_running_out_of_time_kills_the_child(tmp_path: Path, scratch: Path, limits: DatasetLimits) -> None:
    long = replace(limits, max_track_seconds=600)
    with pytest.raises(DatasetError, match=r"took longer than 0\.05 s"):
        await validate_dataset_zip_isolated(
            _long_tracks(tmp_path / "long.zip"), long, timeout_s=0.05, memory_bytes=2 * GB
        )
    assert multiprocessing.active_children() == []
    assert not _unpacked(scratch), "unpacked files were left behind"


async def test_cancelling_the_caller_kills_the_child(tmp_path: Path, scratch: Path, limits: DatasetLimits) -> None:
    long = replace(limits, max_track_seconds=600)
    check = asyncio.ensure_future(
        validate_dataset_zip_isolated(_long_tracks(tmp_path / "long.zip"), long, timeout_s=60, memory_bytes=2 * GB)
    )
    await asyncio.sleep(0.3)
    check.cancel()
    with pytest.raises(asyncio.CancelledError):
        await check
    assert multiprocessing.active_children() == []
    assert not _unpacked(scratch), "unpacked files were left behind"


async def test_an_unexpected_error_in_the_child_is_not_blamed_on_the_dataset(
    tmp_path: Path, scratch: Path, limits: DatasetLimits
) -> None:
    with pytest.raises(RuntimeError, match="FileNotFoundError"):
        await validate_dataset_zip_isolated(tmp_path / "missing.zip", limits, timeout_s=60, memory_bytes=2 * GB)
    assert not _unpacked(scratch), "unpacked files were left behind"
