"""Where downloaded results go: file names from result URLs, and writes that never leave half a file behind."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit


def name_from_url(url: str) -> str:
    """A file name for a result URL: `{task_id}-take-0.mp3` for `/files/outputs/{task_id}/take-0.mp3`."""
    parts = PurePosixPath(unquote(urlsplit(url).path)).parts
    tail = [p for p in parts[-2:] if p not in ("/", "files", "outputs")]
    return "-".join(tail) or "download"


def is_directory(dest: str | Path) -> bool:
    """Whether `dest` names a directory: an existing one, or a path written with a trailing separator."""
    return Path(dest).is_dir() or str(dest).endswith(("/", os.sep))


def result_paths(dest: str | Path, urls: list[str]) -> list[Path]:
    """Paths for `urls`: inside `dest` when it is a directory (`is_directory`), named by `name_from_url`;
    otherwise `dest` for the first and `{stem}-{n}{suffix}` for take n of the others."""
    path = Path(dest)
    if is_directory(dest):
        return [path / name_from_url(url) for url in urls]
    return [path if n == 0 else path.with_name(f"{path.stem}-{n}{path.suffix}") for n in range(len(urls))]


def partial_path(dest: Path) -> Path:
    """The temporary file a download is written to before it is renamed to `dest`."""
    return dest.with_name(f".{dest.name}.part")
