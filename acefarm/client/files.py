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


def result_paths(dest: Path, urls: list[str]) -> list[Path]:
    """Paths for `urls`: inside `dest` when it is a directory (or ends with a separator), named by `name_from_url`;
    otherwise `dest` for the first and `{stem}-{n}{suffix}` for take n of the others."""
    if dest.is_dir() or str(dest).endswith(os.sep):
        return [dest / name_from_url(url) for url in urls]
    return [dest if n == 0 else dest.with_name(f"{dest.stem}-{n}{dest.suffix}") for n in range(len(urls))]


def partial_path(dest: Path) -> Path:
    """The temporary file a download is written to before it is renamed to `dest`."""
    return dest.with_name(f".{dest.name}.part")
