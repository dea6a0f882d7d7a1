"""From the folded `TaskStatus` to what clients see (`TaskStatusResponse`), with signed file and event URLs."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import quote, urlencode

from gateway.access import events_path, file_path
from gateway.signed_links import LinkSigner
from gateway.state import GatewayState
from schemas.queues import QueuePosition
from schemas.status import TaskStatus, TaskStatusResponse

Render = Callable[[TaskStatus], TaskStatusResponse]

_SHARED = tuple(name for name in TaskStatusResponse.model_fields if name in TaskStatus.model_fields)
"""The fields a response copies from the folded status (the rest are the signed URLs)."""


def signed_url(signer: LinkSigner, path: str, owner: str, base_url: str = "") -> str:
    """`path` signed for `owner` (quoted in the URL), absolute when `base_url` is set; the same URL for a
    while (`LinkSigner.sign(stable=True)`), so repeated status answers agree."""
    return f"{base_url.rstrip('/')}{quote(path)}?{urlencode(signer.sign(path, owner, stable=True))}"


def to_response(
    status: TaskStatus, signer: LinkSigner, viewer: str, base_url: str = "", queue: QueuePosition | None = None
) -> TaskStatusResponse:
    """The public view of a task: `file_url` is the first result, `file_urls` all of them, `events_url` its
    live stream; each is signed for the task's owner (`viewer` for a task without one) and expires. A pending
    task's `queue` position fills `queue_position` and `eta_s`."""
    owner = status.owner or viewer
    urls = [signed_url(signer, file_path(f.key), owner, base_url) for f in status.files]
    fields = {name: getattr(status, name) for name in _SHARED}
    if queue is not None:
        fields.update(queue_position=queue.position, eta_s=queue.eta_s)
    codes_key = status.result.audio_codes_key if status.result else None
    return TaskStatusResponse(
        **fields,
        file_url=urls[0] if urls else None,
        file_urls=urls,
        events_url=signed_url(signer, events_path(status.task_id), owner, base_url),
        audio_codes_url=signed_url(signer, file_path(codes_key), owner, base_url) if codes_key else None,
    )


def renderer(gateway: GatewayState, viewer: str) -> Render:
    """`to_response` for `viewer` on this gateway, with the queue position of pending jobs."""
    signer, base_url = gateway.signer, gateway.public_base_url
    return lambda status: to_response(status, signer, viewer, base_url, gateway.queue_position(status))
