"""LoRA training datasets: check an uploaded zip of tracks and unpack it safely (no torch).

The gateway runs `validate_dataset_zip` before a training job is queued; the trainer runs
`extract_dataset` again on the stored zip. A dataset is a zip of audio tracks (wav, flac, mp3, ogg),
optionally with `<track>.txt` lyrics next to a track and one `metadata.csv` / `metadata.json`
(columns or keys: file, caption, bpm, key). Every problem raises `DatasetError` naming the file and why.

Zip bombs are stopped twice: by the sizes the zip declares (entry count and directory size read from
the zip's end record before `zipfile` parses the directory, total unpacked size, compression ratio)
and by counting the bytes actually unpacked. Every track's header is checked (container, sample rate,
channels, decoded size) before it is decoded. Messages name zip members, never local paths.
"""

from __future__ import annotations

import bisect
import csv
import io
import json
import math
import re
import stat
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from acefarm.infra.audio import AudioInputError, decode_audio, probe
from acefarm.infra.settings import Settings
from acefarm.model.zip_end import read_zip_end
from schemas.training import TrackInfo

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg")
METADATA_NAMES = ("metadata.csv", "metadata.json")
MAX_LYRICS_BYTES = 64 * 1024
MAX_METADATA_BYTES = 4 * 1024 * 1024
RATIO_CHECK_MIN_BYTES = 1024 * 1024
"""Members smaller than this are not held to the compression-ratio limit on their own (tiny text
files compress very well); the whole zip always is."""
MAX_NAME_CHARS = 1024
MAX_NAME_PART_BYTES = 255
"""The longest file or folder name most file systems store."""
MAX_DIRECTORY_BYTES_PER_ENTRY = 2048
"""The zip's central directory may average this much per declared entry (46 bytes + name + extras)."""
_CHUNK = 1 << 20
_DRIVE = re.compile(r"^[A-Za-z]:")


class DatasetError(ValueError):
    """The dataset is unusable; `file` names the zip member at fault (None: the zip as a whole)."""

    def __init__(self, file: str | None, reason: str) -> None:
        self.file = file
        self.reason = reason
        super().__init__(f"{file}: {reason}" if file else reason)


def _default(setting: str) -> Any:
    """The default of a `LORA_*` setting: the limits are spelled once, in `Settings`."""
    return Settings.model_fields[setting].default


@dataclass(frozen=True)
class DatasetLimits:
    """What a dataset zip may be; see the `LORA_*` settings."""

    max_zip_bytes: int = _default("lora_max_zip_bytes")
    max_uncompressed_bytes: int = _default("lora_max_uncompressed_bytes")
    max_compression_ratio: float = _default("lora_max_compression_ratio")
    max_entries: int = _default("lora_max_zip_entries")
    min_tracks: int = _default("lora_min_tracks")
    max_tracks: int = _default("lora_max_tracks")
    min_track_seconds: float = _default("lora_min_track_seconds")
    max_track_seconds: float = _default("lora_max_track_seconds")

    @classmethod
    def from_settings(cls, settings: Settings) -> DatasetLimits:
        """The limits configured by the `LORA_*` settings."""
        return cls(
            max_zip_bytes=settings.lora_max_zip_bytes,
            max_uncompressed_bytes=settings.lora_max_uncompressed_bytes,
            max_compression_ratio=settings.lora_max_compression_ratio,
            max_entries=settings.lora_max_zip_entries,
            min_tracks=settings.lora_min_tracks,
            max_tracks=settings.lora_max_tracks,
            min_track_seconds=settings.lora_min_track_seconds,
            max_track_seconds=settings.lora_max_track_seconds,
        )


@dataclass
class DatasetTrack:
    """One track of an unpacked dataset."""

    name: str
    """Path inside the zip, '/'-separated."""
    path: Path
    """The unpacked file."""
    duration_s: float
    caption: str | None = None
    lyrics: str | None = None
    bpm: int | None = None
    key: str | None = None

    def info(self) -> TrackInfo:
        """The track as recorded in the LoRA manifest."""
        return TrackInfo(
            name=self.name,
            duration_s=round(self.duration_s, 3),
            caption=self.caption,
            lyrics=self.lyrics,
            bpm=self.bpm,
            key=self.key,
        )


@dataclass
class Dataset:
    """An unpacked, checked dataset."""

    root: Path
    tracks: list[DatasetTrack]
    ignored: list[str] = field(default_factory=list)
    """Members that are neither tracks nor sidecars (skipped)."""


@dataclass
class _Plan:
    """Which member is what, decided from the zip's directory before anything is unpacked."""

    members: dict[str, zipfile.ZipInfo]
    tracks: list[str]
    lyrics: dict[str, str]
    """track name -> lyrics member name"""
    metadata: str | None
    ignored: list[str]


def validate_dataset_zip(zip_path: Path, limits: DatasetLimits) -> list[TrackInfo]:
    """Check a dataset zip completely (unpacking into a temporary dir that is removed); the tracks found.

    Raises `DatasetError` naming the file and why.
    """
    with tempfile.TemporaryDirectory(prefix="acefarm-dataset-") as tmp:
        dataset = extract_dataset(zip_path, Path(tmp), limits)
        return [track.info() for track in dataset.tracks]


def extract_dataset(zip_path: Path, dest: Path, limits: DatasetLimits) -> Dataset:
    """Check the zip at `zip_path`, unpack its tracks and sidecars under `dest`, decode every track.

    Raises `DatasetError` naming the file and why; `dest` may then hold a partial unpack.
    """
    size = zip_path.stat().st_size
    if size > limits.max_zip_bytes:
        raise DatasetError(None, f"the zip is {_size(size)}; the limit is {_size(limits.max_zip_bytes)}")
    _check_zip_end(zip_path, size, limits)
    try:
        with zipfile.ZipFile(zip_path) as archive:
            plan = _plan(archive, size, limits)
            _unpack(archive, plan, dest.resolve(), limits)
    except zipfile.BadZipFile as error:
        raise DatasetError(None, f"the zip is damaged: {error}") from None
    metadata = _read_metadata(dest, plan) if plan.metadata else {}
    tracks = [_load_track(dest, name, plan, metadata, limits) for name in plan.tracks]
    return Dataset(root=dest, tracks=tracks, ignored=plan.ignored)


def _check_zip_end(zip_path: Path, size: int, limits: DatasetLimits) -> None:
    """Refuse a zip whose end record declares too many entries or an oversized directory, before opening it."""
    end = read_zip_end(zip_path)
    if end is None:
        raise DatasetError(None, "the upload is not a zip archive")
    if end.entries > limits.max_entries:
        raise DatasetError(None, f"the zip holds {end.entries} entries; the limit is {limits.max_entries}")
    if end.directory_bytes > min(size, end.entries * MAX_DIRECTORY_BYTES_PER_ENTRY):
        raise DatasetError(
            None, f"the zip's directory is larger than its {end.entries} entries need (a damaged or hostile zip)"
        )


def _plan(archive: zipfile.ZipFile, zip_size: int, limits: DatasetLimits) -> _Plan:
    infos = archive.infolist()
    if len(infos) > limits.max_entries:
        raise DatasetError(None, f"the zip holds {len(infos)} entries; the limit is {limits.max_entries}")
    members: dict[str, zipfile.ZipInfo] = {}
    seen: dict[str, str] = {}
    declared = 0
    for info in infos:
        name = _safe_name(info)
        if info.is_dir():
            continue
        if info.flag_bits & 0x1:
            raise DatasetError(name, "the file is encrypted; upload a zip without a password")
        _check_ratio(name, info.file_size, info.compress_size, limits)
        declared += info.file_size
        if declared > limits.max_uncompressed_bytes:
            raise DatasetError(None, f"the zip unpacks to more than {_size(limits.max_uncompressed_bytes)} (the limit)")
        folded = name.casefold()
        if folded in seen:
            raise DatasetError(name, f"the name appears twice in the zip (also as {seen[folded]!r})")
        seen[folded] = name
        members[name] = info
    _check_folders(seen)
    ratio = declared / max(zip_size, 1)
    if ratio > limits.max_compression_ratio:
        raise DatasetError(
            None, f"the zip unpacks {ratio:.0f} times larger than it is; the limit is {limits.max_compression_ratio:g}"
        )
    return _classify(members, limits)


def _check_folders(names: dict[str, str]) -> None:
    """Refuse a file that is also used as a folder (`a.wav` and `a.wav/b.wav`); keys are casefolded names."""
    ordered = sorted(names)
    for folded, name in names.items():
        at = bisect.bisect_left(ordered, folded + "/")
        if at < len(ordered) and ordered[at].startswith(folded + "/"):
            raise DatasetError(names[ordered[at]], f"{name!r} is both a file and a folder in the zip; rename one")


def _safe_name(info: zipfile.ZipInfo) -> str:
    """The member's name as a safe relative '/' path, or `DatasetError` if it could escape."""
    raw = info.filename
    name = raw.replace("\\", "/")
    if not name.strip("/"):
        raise DatasetError(raw or "(empty name)", "an entry has an empty name")
    if name.startswith("/") or _DRIVE.match(name):
        raise DatasetError(raw, "absolute paths are not allowed in the zip")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise DatasetError(raw, "paths with '..' are not allowed in the zip (they would escape the folder)")
    if "\x00" in name:
        raise DatasetError(raw, "the name contains a NUL character")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise DatasetError(raw, "symbolic links are not allowed in the zip")
    if len(name) > MAX_NAME_CHARS or any(len(p.encode()) > MAX_NAME_PART_BYTES for p in parts):
        raise DatasetError(
            raw[:100] + "…" if len(raw) > 100 else raw,
            f"the path is too long (at most {MAX_NAME_CHARS} characters, {MAX_NAME_PART_BYTES} bytes per name)",
        )
    return "/".join(parts) + ("/" if name.endswith("/") else "")


def _check_ratio(name: str, size: int, compressed: int, limits: DatasetLimits) -> None:
    if size < RATIO_CHECK_MIN_BYTES:
        return
    ratio = size / max(compressed, 1)
    if ratio > limits.max_compression_ratio:
        raise DatasetError(
            name,
            f"compressed {ratio:.0f}:1, above the limit of {limits.max_compression_ratio:g}:1 (a zip bomb?)",
        )


def _is_hidden(name: str) -> bool:
    parts = name.split("/")
    return parts[0] == "__MACOSX" or any(p.startswith(".") for p in parts)


def _classify(members: dict[str, zipfile.ZipInfo], limits: DatasetLimits) -> _Plan:
    tracks: list[str] = []
    texts: dict[str, str] = {}
    metadata: list[str] = []
    ignored: list[str] = []
    for name in sorted(members):
        path = PurePosixPath(name)
        suffix = path.suffix.lower()
        if _is_hidden(name):
            ignored.append(name)
        elif suffix in AUDIO_EXTENSIONS:
            tracks.append(name)
        elif path.name.lower() in METADATA_NAMES:
            metadata.append(name)
        elif suffix == ".txt":
            texts[str(path.with_suffix("")).casefold()] = name
        else:
            ignored.append(name)
    if len(metadata) > 1:
        raise DatasetError(metadata[1], f"only one metadata file is allowed (found {', '.join(metadata)})")
    n = len(tracks)
    kinds = "/".join(e.lstrip(".") for e in AUDIO_EXTENSIONS)
    if n < limits.min_tracks:
        raise DatasetError(None, f"the zip holds {n} audio tracks ({kinds}); at least {limits.min_tracks} are needed")
    if n > limits.max_tracks:
        raise DatasetError(None, f"the zip holds {n} audio tracks; at most {limits.max_tracks} are allowed")
    lyrics: dict[str, str] = {}
    for track in tracks:
        sidecar = texts.pop(str(PurePosixPath(track).with_suffix("")).casefold(), None)
        if sidecar is not None:
            lyrics[track] = sidecar
    ignored.extend(texts.values())
    return _Plan(members, tracks, lyrics, metadata[0] if metadata else None, sorted(ignored))


def _unpack(archive: zipfile.ZipFile, plan: _Plan, dest: Path, limits: DatasetLimits) -> None:
    """Unpack tracks and sidecars, counting real bytes against the declared sizes and the total limit."""
    wanted = [*plan.tracks, *plan.lyrics.values(), *([plan.metadata] if plan.metadata else [])]
    total = 0
    for name in wanted:
        info = plan.members[name]
        target = (dest / name).resolve()
        if not target.is_relative_to(dest):
            raise DatasetError(name, "the path escapes the dataset folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        written = 0
        try:
            with archive.open(info) as src, open(target, "xb") as out:
                while chunk := src.read(_CHUNK):
                    written += len(chunk)
                    total += len(chunk)
                    if written > info.file_size:
                        raise DatasetError(name, "the file unpacks larger than the zip declares (a zip bomb?)")
                    if total > limits.max_uncompressed_bytes:
                        raise DatasetError(
                            name, f"the zip unpacks to more than {_size(limits.max_uncompressed_bytes)} (the limit)"
                        )
                    out.write(chunk)
        except OSError as error:  # its text holds the local path: name only the cause
            raise DatasetError(name, f"the file cannot be unpacked: {error.strerror or type(error).__name__}") from None
        except (zipfile.BadZipFile, EOFError, NotImplementedError, RuntimeError) as error:
            raise DatasetError(name, f"the file cannot be unpacked: {error}") from None


def _read_metadata(dest: Path, plan: _Plan) -> dict[str, dict[str, Any]]:
    """Track name -> {caption, bpm, key} from the metadata file."""
    name = plan.metadata
    assert name is not None
    raw = (dest / name).read_bytes()
    if len(raw) > MAX_METADATA_BYTES:
        raise DatasetError(name, f"the metadata file is larger than {_size(MAX_METADATA_BYTES)}")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise DatasetError(name, "the metadata file is not UTF-8 text") from None
    rows = _json_rows(name, text) if name.lower().endswith(".json") else _csv_rows(name, text)
    by_path = {t.casefold(): t for t in plan.tracks}
    by_base: dict[str, list[str]] = {}
    for name_in_zip in plan.tracks:
        by_base.setdefault(PurePosixPath(name_in_zip).name.casefold(), []).append(name_in_zip)
    folder = str(PurePosixPath(name).parent)
    result: dict[str, dict[str, Any]] = {}
    for where, row in rows:
        file = str(row.get("file") or row.get("filename") or "").strip().replace("\\", "/")
        if not file:
            raise DatasetError(name, f"{where}: the 'file' field is missing")
        relative = file if folder == "." else f"{folder}/{file}"
        track: str | None = by_path.get(file.casefold()) or by_path.get(relative.casefold())
        if track is None:
            matches = by_base.get(PurePosixPath(file).name.casefold(), [])
            track = matches[0] if len(matches) == 1 else None
        if track is None:
            raise DatasetError(name, f"{where}: {file!r} is not an audio track in the zip")
        result[track] = _metadata_fields(name, where, row)
    return result


def _csv_rows(name: str, text: str) -> list[tuple[str, dict[str, Any]]]:
    reader = csv.DictReader(io.StringIO(text))
    try:
        fields = [f.strip().lower() for f in reader.fieldnames or []]
        if "file" not in fields and "filename" not in fields:
            raise DatasetError(name, "the CSV needs a header row with a 'file' column (and caption, bpm, key)")
        rows = []
        for index, row in enumerate(reader, start=2):
            clean = {str(k).strip().lower(): v.strip() if isinstance(v, str) else v for k, v in row.items() if k}
            rows.append((f"line {index}", clean))
    except csv.Error as error:
        raise DatasetError(name, f"not a valid CSV file: {error}") from None
    return rows


def _json_rows(name: str, text: str) -> list[tuple[str, dict[str, Any]]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise DatasetError(name, f"not valid JSON: {error}") from None
    except RecursionError:
        raise DatasetError(
            name, "the JSON is nested too deeply; write a flat list of {file, caption, bpm, key}"
        ) from None
    except ValueError:  # an integer longer than sys.get_int_max_str_digits()
        raise DatasetError(
            name, f"not valid JSON: a number has more than {sys.get_int_max_str_digits()} digits"
        ) from None
    if isinstance(data, dict) and isinstance(data.get("tracks"), list):
        data = data["tracks"]
    if isinstance(data, dict):  # {"song.wav": {"caption": ...}, ...}
        data = [{"file": k, **v} if isinstance(v, dict) else {"file": k, "caption": v} for k, v in data.items()]
    if not isinstance(data, list):
        raise DatasetError(name, "expected a list of {file, caption, bpm, key} objects")
    rows = []
    for index, item in enumerate(data):
        if not isinstance(item, dict):
            raise DatasetError(name, f"entry {index}: expected an object with file, caption, bpm, key")
        rows.append((f"entry {index}", {str(k).lower(): v for k, v in item.items()}))
    return rows


def _metadata_fields(name: str, where: str, row: dict[str, Any]) -> dict[str, Any]:
    caption = row.get("caption")
    key = row.get("key") or row.get("keyscale")
    bpm_raw = row.get("bpm")
    bpm: int | None = None
    if bpm_raw not in (None, ""):
        try:
            value = float(bpm_raw)
        except (TypeError, ValueError, OverflowError):
            value = math.nan
        if not math.isfinite(value):
            raise DatasetError(name, f"{where}: bpm {bpm_raw!r} is not a number")
        bpm = round(value)
        if not 30 <= bpm <= 300:
            raise DatasetError(name, f"{where}: bpm {bpm} is outside 30..300")
    if caption is not None and len(str(caption)) > 1000:
        raise DatasetError(name, f"{where}: the caption is longer than 1000 characters")
    if key is not None and len(str(key)) > 40:
        raise DatasetError(name, f"{where}: the key {key!r} is longer than 40 characters")
    return {
        "caption": (str(caption).strip() or None) if caption is not None else None,
        "bpm": bpm,
        "key": (str(key).strip() or None) if key is not None else None,
    }


def _load_track(
    dest: Path, name: str, plan: _Plan, metadata: dict[str, dict[str, Any]], limits: DatasetLimits
) -> DatasetTrack:
    path = dest / name
    data = path.read_bytes()
    try:
        header = probe(data)
        suffix = PurePosixPath(name).suffix.lower().lstrip(".")
        if header.extension != suffix:
            raise DatasetError(
                name, f"the file holds {header.format} audio but is named .{suffix}; rename it to .{header.extension}"
            )
        _, info = decode_audio(data, max_seconds=limits.max_track_seconds)
    except AudioInputError as error:
        raise DatasetError(name, str(error)) from None
    if info.duration_s < limits.min_track_seconds:
        raise DatasetError(
            name, f"the track lasts {info.duration_s:.1f} s; tracks must last at least {limits.min_track_seconds:g} s"
        )
    lyrics = _read_lyrics(dest, plan.lyrics[name]) if name in plan.lyrics else None
    meta = metadata.get(name, {})
    return DatasetTrack(
        name=name,
        path=path,
        duration_s=info.duration_s,
        caption=meta.get("caption"),
        lyrics=lyrics,
        bpm=meta.get("bpm"),
        key=meta.get("key"),
    )


def _read_lyrics(dest: Path, name: str) -> str | None:
    raw = (dest / name).read_bytes()
    if len(raw) > MAX_LYRICS_BYTES:
        raise DatasetError(name, f"the lyrics file is larger than {_size(MAX_LYRICS_BYTES)}")
    try:
        text = raw.decode("utf-8-sig").strip()
    except UnicodeDecodeError:
        raise DatasetError(name, "the lyrics file is not UTF-8 text") from None
    return text or None


def _size(n: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"
