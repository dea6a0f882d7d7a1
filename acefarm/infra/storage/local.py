"""Local filesystem storage: the embedded default.

Objects live at `root/<key>`. The content type is kept in a sidecar file `.<name>.ctype` beside the
object, unless it is the one the name implies (`mimetypes`, what a read without a sidecar answers): then no
sidecar is written and a stale one is removed. Names starting with '.' can never be keys (see
`validate_key`), so sidecars and temporary files never collide with objects and are skipped by `list`.
Writes go to a temporary file in the same directory and are moved into place with `os.replace`, so readers
see the old object or the new one, never a partial one; the temporary file is fsync'd first unless the write
is not `durable` (then a killed process still leaves the new object in the page cache; only a machine crash
can lose it). The sidecar is never fsync'd: one lost in a machine crash only means the type is guessed from
the name again. Blocking I/O runs in a thread (`asyncio.to_thread`).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import mimetypes
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from stat import S_ISLNK
from typing import BinaryIO

from acefarm.infra.storage._base import InvalidKey, ObjectInfo, validate_key, validate_prefix

_SIDECAR_SUFFIX = ".ctype"


class LocalStorage:
    """Objects as files under `root`; every path is resolved and checked to stay inside it."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._root = str(self.root)

    def _path(self, key: str) -> Path:
        """The file of `key`; a key whose path passes through a symbolic link must still lead inside the root.

        A valid key has no '.', '..' or empty segments, so only a link below the root can lead out: the
        segments that exist are checked for one (with one, the whole path is resolved and checked)."""
        validate_key(key)
        probe = self._root
        for segment in key.split("/"):
            probe = f"{probe}/{segment}"
            try:
                linked = S_ISLNK(os.lstat(probe).st_mode)
            except OSError:  # absent (or under a file): nothing further down exists to lead anywhere
                break
            if linked:
                path = (self.root / key).resolve()
                if not path.is_relative_to(self.root) or path == self.root:
                    raise InvalidKey(f"storage key escapes the store: {key!r}")
                return path
        return Path(f"{self._root}/{key}")

    @staticmethod
    def _sidecar(path: Path) -> Path:
        return path.with_name(f".{path.name}{_SIDECAR_SUFFIX}")

    def local_path(self, key: str) -> Path | None:
        """The file that holds (or would hold) the object; it may not exist."""
        return self._path(key)

    async def put_bytes(self, key: str, data: bytes, content_type: str, *, durable: bool = True) -> ObjectInfo:
        """Store `data` under `key` atomically; fsync'd only when `durable`."""
        path = self._path(key)
        await asyncio.to_thread(self._write, path, lambda f: f.write(data), content_type, durable)
        return ObjectInfo(key=key, size=len(data), content_type=content_type)

    async def put_file(self, key: str, path: Path, content_type: str) -> ObjectInfo:
        """Copy the file at `path` under `key` atomically."""
        dest = self._path(key)

        def copy(f: BinaryIO) -> None:
            with open(path, "rb") as src:
                shutil.copyfileobj(src, f, 1 << 20)

        await asyncio.to_thread(self._write, dest, copy, content_type)
        return ObjectInfo(key=key, size=dest.stat().st_size, content_type=content_type)

    def _write(self, path: Path, fill: Callable[[BinaryIO], object], content_type: str, durable: bool = True) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        sidecar = self._sidecar(path)
        if content_type == mimetypes.guess_type(path.name)[0]:
            sidecar.unlink(missing_ok=True)
        else:
            _atomic_write(sidecar, lambda f: f.write(content_type.encode()), durable=False)
        _atomic_write(path, fill, durable)

    async def get_bytes(self, key: str) -> bytes:
        """The object's bytes; raises `FileNotFoundError` if absent."""
        path = self._path(key)
        return await asyncio.to_thread(path.read_bytes)

    async def download_file(self, key: str, dest: Path) -> None:
        """Copy the object to `dest` (atomically); raises `FileNotFoundError` if absent."""
        src = self._path(key)

        def copy(f: BinaryIO) -> None:
            with open(src, "rb") as fh:
                shutil.copyfileobj(fh, f, 1 << 20)

        def run() -> None:
            if not src.is_file():
                raise FileNotFoundError(key)
            dest.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write(dest, copy)

        await asyncio.to_thread(run)

    async def stat(self, key: str) -> ObjectInfo | None:
        """Size and content type, or None if absent."""
        return await asyncio.to_thread(self._info, key, self._path(key))

    def _info(self, key: str, path: Path) -> ObjectInfo | None:
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return None
        if not path.is_file():
            return None
        try:
            content_type: str | None = self._sidecar(path).read_text().strip() or None
        except FileNotFoundError:
            content_type = None
        content_type = content_type or mimetypes.guess_type(path.name)[0]
        return ObjectInfo(key=key, size=size, content_type=content_type)

    async def list(self, prefix: str) -> list[ObjectInfo]:
        """Objects whose key starts with `prefix`, sorted by key."""
        validate_prefix(prefix)
        return await asyncio.to_thread(self._list, prefix)

    def _list(self, prefix: str) -> builtins.list[ObjectInfo]:
        base = self.root / prefix.rpartition("/")[0] if "/" in prefix else self.root
        found: list[ObjectInfo] = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if name.startswith("."):
                    continue
                path = Path(dirpath) / name
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix) and (info := self._info(key, path)):
                    found.append(info)
        return sorted(found, key=lambda info: info.key)

    async def delete(self, key: str) -> None:
        """Remove one object (no error if absent)."""
        path = self._path(key)
        await asyncio.to_thread(self._remove, path)

    def _remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        self._sidecar(path).unlink(missing_ok=True)
        # Prune now-empty directories up to the root.
        parent = path.parent
        while parent != self.root:
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    async def delete_prefix(self, prefix: str) -> int:
        """Remove every object under `prefix`; returns how many."""
        infos = await self.list(prefix)
        for info in infos:
            await asyncio.to_thread(self._remove, self._path(info.key))
        return len(infos)

    async def expire(self, prefix: str, before: float) -> int:
        """Remove every object under `prefix` last modified before `before` (a Unix time); returns how many."""
        validate_prefix(prefix)
        return await asyncio.to_thread(self._expire, prefix, before)

    def _expire(self, prefix: str, before: float) -> int:
        removed = 0
        for info in self._list(prefix):
            path = self._path(info.key)
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < before:
                    self._remove(path)
                    removed += 1
        return removed

    async def presigned_url(self, key: str, expires_s: int | None = None) -> str | None:
        """None: the gateway serves local files itself."""
        self._path(key)
        return None

    async def close(self) -> None:
        """Nothing to release."""


def _atomic_write(path: Path, fill: Callable[[BinaryIO], object], durable: bool = True) -> None:
    """Write `path` through a temporary file in the same directory (fsync'd when `durable`), then `os.replace` it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            fill(f)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
