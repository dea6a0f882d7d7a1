"""`GET /files/{key}`: stored results, streamed from local storage (with Range) or redirected to S3.

A file answers to a signed link (`file_url` in the task's status) or to a key whose owner owns the task
(admins: any); anything else is the same 404 as a missing file. S3 redirects are issued only after that
check and expire within `PRESIGNED_REDIRECT_S`.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException, NotFoundException
from litestar.params import FromPath
from litestar.response import File, Redirect, Stream
from litestar.status_codes import HTTP_206_PARTIAL_CONTENT, HTTP_307_TEMPORARY_REDIRECT

from acefarm.infra.storage import InvalidKey, validate_key
from gateway.access import caller, file_path, link_owner, task_of_output
from gateway.auth import SIGNED_LINKS
from gateway.errors import error_responses
from gateway.state import GatewayState
from schemas import storage_keys
from schemas.generation import CONTENT_TYPES, FILE_EXTENSIONS

SERVED_PREFIXES = (storage_keys.OUTPUTS,)
"""Only results are downloadable; inputs, datasets and adapters are not served here."""

_TYPES = {f".{FILE_EXTENSIONS[fmt]}": content_type for fmt, content_type in CONTENT_TYPES.items()}
"""Content type by file extension, for stored files that carry none."""
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_CHUNK = 256 * 1024
_MAX_DIGITS = 18
"""Longest byte position a `Range` may name (10^18 bytes is beyond any file; longer is 416, never parsed)."""

PRESIGNED_REDIRECT_S = 300
"""Seconds the presigned S3 URL of a download redirect lives (followed at once; less if S3_PRESIGN_EXPIRY_S is)."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive byte span of a single `Range: bytes=a-b` header, or None to send everything.

    Raises a 416 `HTTPException` for a range that lies outside the object.
    """
    match = _RANGE.match(header.strip()) if header else None
    if match is None:
        return None  # absent, multi-range or malformed: a full answer is always allowed
    first, last = match.groups()
    if not first and not last:
        return None
    if len(first) > _MAX_DIGITS or len(last) > _MAX_DIGITS:  # no stored file is that large
        raise _unsatisfiable(header, size)
    if not first:
        start, end = max(size - int(last), 0), size - 1
    else:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        raise _unsatisfiable(header, size)
    return start, end


def _unsatisfiable(header: str | None, size: int) -> HTTPException:
    shown = header if header is None or len(header) <= 80 else header[:77] + "..."
    return HTTPException(
        status_code=416,
        detail=f"the range {shown!r} is outside the file's {size} bytes",
        headers={"Content-Range": f"bytes */{size}"},
    )


async def _read_span(path: Path, start: int, end: int) -> AsyncIterator[bytes]:
    async with await anyio.open_file(path, "rb") as f:
        await f.seek(start)
        left = end - start + 1
        while left > 0:
            chunk = await f.read(min(_CHUNK, left))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk


def _checked_key(key: str) -> str:
    key = key.lstrip("/")
    try:
        validate_key(key)
    except InvalidKey:
        raise NotFoundException(detail="no such file") from None
    if not key.startswith(SERVED_PREFIXES):
        raise NotFoundException(detail="no such file")
    return key


def _check_access(gateway: GatewayState, request: Request[Any, Any, Any], key: str) -> None:
    """Allow a valid signed link for `key`, or a caller who owns the key's task (or is an admin); else 404.

    Without a valid signature the caller must send a key (401 otherwise).
    """
    if link_owner(gateway, request, file_path(key)) is not None:
        return
    principal = caller(gateway, request)
    if principal.is_admin:
        return
    task_id = task_of_output(key)
    status = gateway.view.store.get(task_id) if task_id else None
    if status is None or not principal.may_access(status.owner):
        raise NotFoundException(detail="no such file")


class FilesController(Controller):
    """`GET /files/{key}`."""

    tags = ("files",)

    @get(
        "/files/{key:path}",
        summary="Download a result file",
        responses=error_responses(401, 404, 416),
        opt={SIGNED_LINKS: True},
    )
    async def get_file(
        self, gateway: NamedDependency[GatewayState], key: FromPath[str], request: Request[Any, Any, Any]
    ) -> Response[Any]:
        """The stored audio with its content type (audio/wav, audio/flac, audio/mpeg, audio/ogg, audio/mp4).

        Open it with the signed `file_url` from the task's status (no headers needed until it expires) or
        with the owner's key. Local storage streams it (Content-Length, `Range` for seeking); S3 answers
        307 to a short-lived presigned URL. Anything not a stored result, someone else's, or trying to
        leave the store, is 404.
        """
        key = _checked_key(key)
        _check_access(gateway, request, key)
        storage = gateway.storage
        lifetime = min(PRESIGNED_REDIRECT_S, gateway.settings.s3_presign_expiry_s)
        try:
            info = await storage.stat(key)
            url = await storage.presigned_url(key, lifetime) if info is not None else None
            path = storage.local_path(key)
        except InvalidKey:  # e.g. a link that leads out of the store
            raise NotFoundException(detail="no such file") from None
        if info is None:
            raise NotFoundException(detail="no such file")
        if url is not None:
            return Redirect(url, status_code=HTTP_307_TEMPORARY_REDIRECT)
        if path is None or not path.is_file():
            raise NotFoundException(detail="no such file")
        media_type = info.content_type or _TYPES.get(path.suffix.lower(), "application/octet-stream")
        span = parse_range(request.headers.get("range"), info.size)
        if span is None:
            return File(
                path,
                media_type=media_type,
                filename=path.name,
                content_disposition_type="inline",
                headers={"Accept-Ranges": "bytes"},
            )
        start, end = span
        return Stream(
            _read_span(path, start, end),
            media_type=media_type,
            status_code=HTTP_206_PARTIAL_CONTENT,
            headers={
                "Accept-Ranges": "bytes",
                "Content-Range": f"bytes {start}-{end}/{info.size}",
                "Content-Length": str(end - start + 1),
            },
        )
