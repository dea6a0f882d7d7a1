"""The storage interface, object keys and their validation.

Key layout (every key about a task carries its id):
  outputs/{task_id}/take-{n}.{fmt}     generated audio
  inputs/{task_id}/{role}.{ext}        uploaded source/reference audio
  datasets/{task_id}.zip               uploaded LoRA training zips
  checkpoints/{task_id}/...            training checkpoints
  loras/{lora_id}/...                  trained adapters and their manifest.json
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class InvalidKey(ValueError):
    """A key that is empty, absolute, or would escape the store."""


class ObjectInfo(BaseModel):
    """Metadata of one stored object."""

    key: str
    size: int
    content_type: str | None = None


def validate_key(key: str) -> str:
    """Return `key` if it is a safe relative key (no '..', no absolute path, no odd characters)."""
    if not key or len(key) > 512 or key.startswith("/") or "\\" in key:
        raise InvalidKey(f"invalid storage key: {key!r}")
    for segment in key.split("/"):
        if segment in ("", ".", "..") or not _SEGMENT.match(segment):
            raise InvalidKey(f"invalid storage key: {key!r}")
    return key


class Storage(Protocol):
    """What every storage backend provides. All keys go through `validate_key`."""

    async def put_bytes(self, key: str, data: bytes, content_type: str, *, durable: bool = True) -> ObjectInfo:
        """Store `data` under `key` atomically (readers never see a partial object). `durable=False` lets a
        backend skip flushing to disk: the object survives its process being killed, not a machine crash
        (for small records rewritten per job, such as attempts)."""
        ...

    async def put_file(self, key: str, path: Path, content_type: str) -> ObjectInfo:
        """Store the file at `path` under `key` atomically."""
        ...

    async def get_bytes(self, key: str) -> bytes:
        """The object's bytes; raises `FileNotFoundError` if absent."""
        ...

    async def download_file(self, key: str, dest: Path) -> None:
        """Copy the object to `dest`; raises `FileNotFoundError` if absent."""
        ...

    async def stat(self, key: str) -> ObjectInfo | None:
        """Metadata, or None if absent."""
        ...

    async def list(self, prefix: str) -> list[ObjectInfo]:
        """Objects whose key starts with `prefix`."""
        ...

    async def delete(self, key: str) -> None:
        """Remove one object (no error if absent)."""
        ...

    async def delete_prefix(self, prefix: str) -> int:
        """Remove every object under `prefix`; returns how many."""
        ...

    async def presigned_url(self, key: str, expires_s: int | None = None) -> str | None:
        """A time-limited download URL, or None when the backend serves files itself (local).

        `expires_s` defaults to `S3_PRESIGN_EXPIRY_S`.
        """
        ...

    def local_path(self, key: str) -> Path | None:
        """The file that holds (or would hold) the object when stored locally, else None."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def validate_prefix(prefix: str) -> str:
    """Return `prefix` if it is empty or a safe key start (a trailing '/' is allowed)."""
    if prefix:
        validate_key(prefix.removesuffix("/"))
    return prefix
