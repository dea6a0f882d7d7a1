"""S3 storage through aiobotocore.

Bucket `STORAGE_BUCKET` at `S3_ENDPOINT_URL` (AWS when unset) in `S3_REGION`; credentials come from
the standard AWS sources (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, profiles, instance roles).
The client is opened and the bucket created if missing on first use. Content types are stored as
the objects' `Content-Type`, so presigned downloads carry them. `list` leaves `content_type` unset
(S3 listings do not include it; use `stat`).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import os
import tempfile
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from acefarm.infra.storage._base import ObjectInfo, validate_key, validate_prefix

_PART_SIZE = 16 * 1024 * 1024
_NOT_FOUND = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}


class S3Storage:
    """Objects in one S3 bucket."""

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        public_endpoint_url: str | None = None,
        region: str = "us-east-1",
        presign_expiry_s: int = 7 * 24 * 3600,
        part_size: int = _PART_SIZE,
    ) -> None:
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.public_endpoint_url = public_endpoint_url
        self.region = region
        self.presign_expiry_s = presign_expiry_s
        self.part_size = max(part_size, 5 * 1024 * 1024)  # S3's smallest part
        self._stack = AsyncExitStack()
        self._client: Any = None
        self._signer: Any = None
        self._lock = asyncio.Lock()

    async def start(self) -> S3Storage:
        """Open the client and create the bucket if it is missing (otherwise done on first use)."""
        await self._s3()
        return self

    async def _s3(self) -> Any:
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                client = await self._open_client(self.endpoint_url)
                await self._ensure_bucket(client)
                self._client = client
        return self._client

    async def _open_client(self, endpoint_url: str | None) -> Any:
        return await self._stack.enter_async_context(
            get_session().create_client(
                "s3",
                endpoint_url=endpoint_url,
                region_name=self.region,
                config=AioConfig(signature_version="s3v4", retries={"max_attempts": 5, "mode": "standard"}),
            )
        )

    async def _presigner(self) -> Any:
        """The client that signs download URLs: for S3_PUBLIC_ENDPOINT_URL when set (signing is local)."""
        if self.public_endpoint_url is None:
            return await self._s3()
        async with self._lock:
            if self._signer is None:
                self._signer = await self._open_client(self.public_endpoint_url)
        return self._signer

    async def _ensure_bucket(self, client: Any) -> None:
        try:
            await client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            if _code(exc) not in _NOT_FOUND:
                raise
        extra: dict[str, Any] = {}
        if self.region != "us-east-1":
            extra["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            await client.create_bucket(Bucket=self.bucket, **extra)
        except ClientError as exc:
            if _code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise

    def local_path(self, key: str) -> Path | None:
        """None: objects are not on the local disk."""
        validate_key(key)
        return None

    async def put_bytes(self, key: str, data: bytes, content_type: str, *, durable: bool = True) -> ObjectInfo:
        """Store `data` under `key` (an S3 PUT is atomic, and durable once acknowledged: `durable` changes nothing)."""
        s3 = await self._s3()
        await s3.put_object(Bucket=self.bucket, Key=validate_key(key), Body=data, ContentType=content_type)
        return ObjectInfo(key=key, size=len(data), content_type=content_type)

    async def put_file(self, key: str, path: Path, content_type: str) -> ObjectInfo:
        """Upload the file at `path`; large files go up in parts read off the event loop."""
        validate_key(key)
        size = (await asyncio.to_thread(path.stat)).st_size
        if size <= self.part_size:
            return await self.put_bytes(key, await asyncio.to_thread(path.read_bytes), content_type)
        s3 = await self._s3()
        upload = await s3.create_multipart_upload(Bucket=self.bucket, Key=key, ContentType=content_type)
        upload_id = upload["UploadId"]
        try:
            parts = []
            with open(path, "rb") as f:  # noqa: ASYNC230 - reads happen in a thread below
                number = 1
                while chunk := await asyncio.to_thread(f.read, self.part_size):
                    part = await s3.upload_part(
                        Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=chunk
                    )
                    parts.append({"ETag": part["ETag"], "PartNumber": number})
                    number += 1
            await s3.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            with contextlib.suppress(Exception):
                await s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            raise
        return ObjectInfo(key=key, size=size, content_type=content_type)

    async def _get(self, key: str) -> Any:
        s3 = await self._s3()
        try:
            return await s3.get_object(Bucket=self.bucket, Key=validate_key(key))
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND:
                raise FileNotFoundError(key) from exc
            raise

    async def get_bytes(self, key: str) -> bytes:
        """The object's bytes; raises `FileNotFoundError` if absent."""
        response = await self._get(key)
        async with response["Body"] as body:
            data: bytes = await body.read()
        return data

    async def download_file(self, key: str, dest: Path) -> None:
        """Stream the object to `dest` (atomically); raises `FileNotFoundError` if absent."""
        response = await self._get(key)
        await asyncio.to_thread(dest.parent.mkdir, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                async with response["Body"] as body:
                    async for chunk in body.iter_chunks(1 << 20):
                        await asyncio.to_thread(f.write, chunk)
            await asyncio.to_thread(os.replace, tmp, dest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    async def stat(self, key: str) -> ObjectInfo | None:
        """Size and content type, or None if absent."""
        s3 = await self._s3()
        try:
            head = await s3.head_object(Bucket=self.bucket, Key=validate_key(key))
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND:
                return None
            raise
        return ObjectInfo(key=key, size=int(head["ContentLength"]), content_type=head.get("ContentType"))

    async def list(self, prefix: str) -> list[ObjectInfo]:
        """Objects whose key starts with `prefix`, sorted by key (without content types)."""
        s3 = await self._s3()
        found: list[ObjectInfo] = []
        paginator = s3.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=validate_prefix(prefix)):
            found.extend(ObjectInfo(key=obj["Key"], size=int(obj["Size"])) for obj in page.get("Contents", []))
        return sorted(found, key=lambda info: info.key)

    async def delete(self, key: str) -> None:
        """Remove one object (no error if absent)."""
        s3 = await self._s3()
        await s3.delete_object(Bucket=self.bucket, Key=validate_key(key))

    async def delete_prefix(self, prefix: str) -> int:
        """Remove every object under `prefix` in batches of 1000; returns how many."""
        s3 = await self._s3()
        keys = [info.key for info in await self.list(prefix)]
        for start in range(0, len(keys), 1000):
            batch = [{"Key": key} for key in keys[start : start + 1000]]
            await s3.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
        return len(keys)

    async def put_lifecycle(self, rules: builtins.list[dict[str, Any]]) -> None:
        """Replace the bucket's lifecycle configuration with `rules` (S3 `Rule` objects; none: remove it)."""
        s3 = await self._s3()
        if rules:
            await s3.put_bucket_lifecycle_configuration(Bucket=self.bucket, LifecycleConfiguration={"Rules": rules})
        else:
            await s3.delete_bucket_lifecycle(Bucket=self.bucket)

    async def get_lifecycle(self) -> builtins.list[dict[str, Any]]:
        """The bucket's lifecycle rules (empty when it has none)."""
        s3 = await self._s3()
        try:
            answer = await s3.get_bucket_lifecycle_configuration(Bucket=self.bucket)
        except ClientError as exc:
            if _code(exc) == "NoSuchLifecycleConfiguration":
                return []
            raise
        rules: builtins.list[dict[str, Any]] = answer.get("Rules", [])
        return rules

    async def presigned_url(self, key: str, expires_s: int | None = None) -> str | None:
        """A presigned GET URL valid for `expires_s` (default `S3_PRESIGN_EXPIRY_S`), for the public endpoint."""
        s3 = await self._presigner()
        url: str = await s3.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": validate_key(key)},
            ExpiresIn=expires_s or self.presign_expiry_s,
        )
        return url

    async def close(self) -> None:
        """Close the client."""
        self._client = None
        await self._stack.aclose()


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
