"""What to deliver for one status snapshot, and when to try again. Pure functions, no I/O.

A snapshot is delivered as at most one event (`delivery_for`):
- `completed` when the task is final (one delivery per task, whatever else changes later);
- `start` when it is running with no stage yet (a worker just took it; one delivery per attempt);
- `progress` when it is running at a stage (one delivery per snapshot).
Snapshots the webhook service itself caused (a `webhook.delivery` report folded into the status) are not
events; neither are pending snapshots, events the job did not ask for, or snapshots older than
`max_age_s` (a new consumer group reading old history).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import quote

from schemas.events import WebhookRetry
from schemas.status import TaskState, TaskStatus, TaskStatusResponse, WebhookPayload
from schemas.webhooks import WebhookEvent


@dataclass(frozen=True)
class Delivery:
    """One webhook delivery at one attempt: the same id and body on every attempt."""

    task_id: str
    delivery_id: str
    event: WebhookEvent
    url: str
    body: bytes
    attempt: int
    first_attempt_at: datetime

    @classmethod
    def of_retry(cls, retry: WebhookRetry) -> Delivery:
        """The delivery a retry record asks for."""
        return cls(
            task_id=retry.task_id,
            delivery_id=retry.delivery_id,
            event=retry.event,
            url=retry.url,
            body=retry.body.encode(),
            attempt=retry.attempt,
            first_attempt_at=retry.first_attempt_at,
        )


def delivery_id(task_id: str, *parts: str) -> str:
    """A stable idempotency id for one delivery of `task_id` (32 hex digits)."""
    return hashlib.sha256("\n".join((task_id, *parts)).encode()).hexdigest()[:32]


def event_of(status: TaskStatus) -> tuple[WebhookEvent, str] | None:
    """The event a snapshot stands for and its delivery id, or None when it stands for none."""
    recorded = status.webhook_status
    if recorded is not None and recorded.status_version == status.version:
        return None  # this snapshot only records a webhook delivery
    if status.status.is_final:
        return "completed", delivery_id(status.task_id, "completed")
    if status.status is TaskState.RUNNING and status.stage is None:
        return "start", delivery_id(status.task_id, "start", status.attempt or "")
    if status.status is TaskState.RUNNING:
        return "progress", delivery_id(status.task_id, "progress", str(status.version))
    return None


_SHARED = tuple(name for name in TaskStatusResponse.model_fields if name in TaskStatus.model_fields)


def public_view(status: TaskStatus, base_url: str) -> TaskStatusResponse:
    """The task as `GET /status/{task_id}` shows it, file URLs under `base_url` (PUBLIC_BASE_URL)."""
    urls = [f"{base_url.rstrip('/')}/files/{quote(f.key)}" for f in status.files]
    shared = {name: getattr(status, name) for name in _SHARED}
    return TaskStatusResponse(**shared, file_url=urls[0] if urls else None, file_urls=urls)


def delivery_for(status: TaskStatus, *, base_url: str, now: datetime, max_age_s: float) -> Delivery | None:
    """The first attempt of the delivery a snapshot calls for, or None (see the module docstring)."""
    target = status.webhook
    found = event_of(status)
    if target is None or found is None or now - status.updated_at > timedelta(seconds=max_age_s):
        return None
    event, identifier = found
    if event not in target.events:
        return None
    recorded = status.webhook_status
    if recorded is not None and recorded.delivery_id == identifier:
        return None  # handled already: a later snapshot of a final task
    payload = WebhookPayload(
        delivery_id=identifier, event=event, task_id=status.task_id, status=public_view(status, base_url)
    )
    return Delivery(
        task_id=status.task_id,
        delivery_id=identifier,
        event=event,
        url=target.url,
        body=payload.model_dump_json().encode(),
        attempt=1,
        first_attempt_at=now,
    )


def backoff_s(attempt: int, base_s: float, max_s: float, jitter: float) -> float:
    """Seconds to wait after failed attempt number `attempt`: `base_s` doubling per attempt up to `max_s`,
    times `0.5 + jitter / 2` (`jitter` uniform in [0, 1): spreads retries of many deliveries apart)."""
    return min(max_s, base_s * 2 ** min(attempt - 1, 62)) * (0.5 + jitter / 2)
