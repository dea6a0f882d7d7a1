"""From the folded `TaskStatus` to what clients see (`TaskStatusResponse`), with file URLs."""

from __future__ import annotations

from urllib.parse import quote

from schemas.status import TaskStatus, TaskStatusResponse

_SHARED = tuple(name for name in TaskStatusResponse.model_fields if name in TaskStatus.model_fields)
"""The fields a response copies from the folded status (the rest are URLs)."""


def file_url(key: str, base_url: str = "") -> str:
    """The download URL of a stored object: `/files/{key}`, absolute when `base_url` is set."""
    return f"{base_url.rstrip('/')}/files/{quote(key)}"


def to_response(status: TaskStatus, base_url: str = "") -> TaskStatusResponse:
    """The public view of a task: `file_url` is the first result, `file_urls` all of them."""
    urls = [file_url(f.key, base_url) for f in status.files]
    fields = {name: getattr(status, name) for name in _SHARED}
    codes_key = status.result.audio_codes_key if status.result else None
    codes_url = file_url(codes_key, base_url) if codes_key else None
    return TaskStatusResponse(**fields, file_url=urls[0] if urls else None, file_urls=urls, audio_codes_url=codes_url)
