"""Dataset zips checked directly (no gateway): good datasets pass, hostile ones raise `DatasetError`."""

from __future__ import annotations

import io
import struct
import zipfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from acefarm.model.datasets import DatasetError, DatasetLimits, validate_dataset_zip
from acefarm.model.zip_end import read_zip_end
from tests.lora.zips import declare_entries, to_zip64, tone, tone_dataset, write_zip


def _encoded(fmt: str, seconds: float = 2.0, rate: int = 44_100) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(int(seconds * rate), dtype=np.int16), rate, format=fmt)
    return buffer.getvalue()


def _wav_claiming_rate(rate: int) -> bytes:
    data = bytearray(tone(2))
    struct.pack_into("<II", data, 24, rate, rate * 2)
    return bytes(data)


def _with_metadata(name: str, text: bytes) -> Callable[[Path], Path]:
    return lambda p: write_zip(p, {"a.wav": tone(2), "b.wav": tone(2), name: text})


def _many_entries(path: Path, padding: int = 20) -> Path:
    return write_zip(path, {"a.wav": tone(2), "b.wav": tone(2), **{f"pad/{i}.bin": b"" for i in range(padding)}})


HOSTILE: dict[str, tuple[Callable[[Path], Path], str]] = {
    "file and folder": (
        lambda p: write_zip(p, {"a.wav": tone(2), "a.wav/b.wav": tone(2), "c.wav": tone(2)}),
        "a.wav/b.wav: 'a.wav' is both a file and a folder in the zip",
    ),
    "folder and file": (
        lambda p: write_zip(p, {"x/a.wav/b.wav": tone(2), "X/A.WAV": tone(2), "c.wav": tone(2)}),
        "x/a.wav/b.wav: 'X/A.WAV' is both a file and a folder in the zip",
    ),
    "deeply nested json": (
        _with_metadata("metadata.json", b"[" * 100_000 + b"]" * 100_000),
        "metadata.json: the JSON is nested too deeply",
    ),
    "huge json number": (
        _with_metadata("metadata.json", b'[{"file": "a.wav", "bpm": ' + b"1" * 5000 + b"}]"),
        "metadata.json: not valid JSON: a number has more than",
    ),
    "infinite bpm": (_with_metadata("metadata.csv", b"file,bpm\na.wav,1e400\n"), "line 2: bpm '1e400' is not a number"),
    "huge csv field": (
        _with_metadata("metadata.csv", b'file,caption\na.wav,"' + b"x" * 200_000 + b'"\n'),
        "metadata.csv: not a valid CSV file: field larger than field limit",
    ),
    "aiff named wav": (
        lambda p: write_zip(p, {"a.wav": tone(2), "b.wav": _encoded("AIFF")}),
        "b.wav: the audio is in the AIFF container; send WAV, FLAC, MP3 or OGG",
    ),
    "flac named wav": (
        lambda p: write_zip(p, {"a.wav": tone(2), "b.wav": _encoded("FLAC")}),
        "b.wav: the file holds FLAC audio but is named .wav; rename it to .flac",
    ),
    "50 MHz header": (
        lambda p: write_zip(p, {"a.wav": tone(2), "b.wav": _wav_claiming_rate(50_000_000)}),
        "b.wav: the audio's sample rate is 50000000 Hz",
    ),
    "too many entries": (_many_entries, "the zip holds 22 entries; the limit is 10"),
    "end record under-counts": (
        lambda p: declare_entries(_many_entries(p, padding=200), 2),  # zipfile would parse all 202
        "the zip's directory is larger than its 2 entries need",
    ),
    "zip64 claims a billion entries": (
        lambda p: to_zip64(tone_dataset(p), entries=10**9),
        "the zip holds 1000000000 entries; the limit is 10",
    ),
}


@pytest.fixture
def small(limits: DatasetLimits) -> DatasetLimits:
    """The test limits with room for ten entries."""
    return replace(limits, max_entries=10)


def test_a_good_dataset_is_checked_with_its_sidecars(tmp_path: Path, small: DatasetLimits) -> None:
    tracks = validate_dataset_zip(tone_dataset(tmp_path / "ok.zip"), small)
    assert [t.name for t in tracks] == ["tones/tone0.wav", "tones/tone1.wav", "tones/tone2.wav"]
    assert tracks[0].lyrics == "[verse]\nla la la"
    assert (tracks[1].caption, tracks[1].bpm, tracks[1].key) == ("pure sine tone", 120, "A minor")


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_zips_are_refused_naming_the_member_and_why(tmp_path: Path, small: DatasetLimits, case: str) -> None:
    build, message = HOSTILE[case]
    with pytest.raises(DatasetError) as caught:
        validate_dataset_zip(build(tmp_path / "bad.zip"), small)
    assert message in str(caught.value)
    assert str(tmp_path) not in str(caught.value) and "/tmp" not in str(caught.value), "a local path leaked"


def test_a_zip64_end_record_is_read_like_zipfile_reads_it(tmp_path: Path, small: DatasetLimits) -> None:
    path = to_zip64(tone_dataset(tmp_path / "zip64.zip"))
    end = read_zip_end(path)
    assert end is not None and end.entries == 5
    with zipfile.ZipFile(path) as archive:
        assert len(archive.infolist()) == 5
        assert end.directory_bytes == sum(46 + len(i.filename) + len(i.extra) for i in archive.infolist())
    assert len(validate_dataset_zip(path, small)) == 3


def test_an_end_record_behind_a_comment_is_found(tmp_path: Path) -> None:
    path = tmp_path / "comment.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a.wav", b"x")
        archive.comment = b"a comment of some length " * 100
    end = read_zip_end(path)
    assert end is not None and end.entries == 1
    with zipfile.ZipFile(path) as archive:
        assert archive.comment.startswith(b"a comment") and len(archive.infolist()) == 1


def test_a_file_without_an_end_record_is_not_a_zip(tmp_path: Path, small: DatasetLimits) -> None:
    path = tmp_path / "plain.zip"
    path.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    assert read_zip_end(path) is None
    with pytest.raises(DatasetError, match="not a zip archive"):
        validate_dataset_zip(path, small)
