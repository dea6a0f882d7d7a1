"""Object storage: one interface, two backends (local filesystem, S3 through aiobotocore).

See `acefarm.infra.storage._base` for the key layout and the `Storage` protocol.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from acefarm.infra.settings import Settings
from acefarm.infra.storage._base import InvalidKey, ObjectInfo, Storage, validate_key, validate_prefix
from acefarm.infra.storage.local import LocalStorage

if TYPE_CHECKING:
    from acefarm.infra.storage.s3 import S3Storage

__all__ = [
    "InvalidKey",
    "LocalStorage",
    "ObjectInfo",
    "S3Storage",
    "Storage",
    "open_storage",
    "validate_key",
    "validate_prefix",
]


def open_storage(settings: Settings) -> Storage:
    """The backend chosen by `STORAGE_BACKEND`: files under `OUTPUT_DIR`, or the S3 bucket.

    The S3 client connects (and creates the bucket if missing) on first use, or on
    `await storage.start()`.
    """
    if settings.storage_backend == "s3":
        from acefarm.infra.storage.s3 import S3Storage

        return S3Storage(
            settings.storage_bucket,
            endpoint_url=settings.s3_endpoint_url,
            public_endpoint_url=settings.s3_public_endpoint_url,
            region=settings.s3_region,
            presign_expiry_s=settings.s3_presign_expiry_s,
        )
    return LocalStorage(settings.output_dir)


def __getattr__(name: str) -> Any:
    """`S3Storage` is imported on first use: aiobotocore costs ~0.4 s of start-up a local-storage process skips."""
    if name == "S3Storage":
        from acefarm.infra.storage.s3 import S3Storage

        return S3Storage
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
