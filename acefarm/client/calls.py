"""The API's calls as data (method, path, body, whether it is safe to repeat), shared by both clients."""

from __future__ import annotations

import mimetypes
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from acefarm.client.config import RETRY_STATUSES, ClientConfig, RetryPolicy
from schemas.generation import GenerateRequest
from schemas.status import TaskStatusResponse
from schemas.training import TrainingOptions
from schemas.webhooks import WebhookEvent

IDEMPOTENCY_HEADER = "Idempotency-Key"

OnStatus = Callable[[TaskStatusResponse], None]
"""A callback that sees each status of a followed job."""


@dataclass(frozen=True)
class Call:
    """One API request, rebuilt for every attempt (files are reopened)."""

    method: str
    path: str
    json: Any = None
    data: dict[str, str] | None = None
    files: tuple[tuple[str, Path], ...] = ()
    headers: dict[str, str] = field(default_factory=dict)
    repeatable: bool = True
    """Whether repeating it after a lost answer is harmless (reads, cancels, submits with an Idempotency-Key)."""
    conflict_means_busy: bool = False
    """Whether a 409 means "the same request is still being processed" (an idempotent submit): retry it."""

    def build(self, http: httpx.Client | httpx.AsyncClient, config: ClientConfig, stack: ExitStack) -> httpx.Request:
        """The request for one attempt; files are opened on `stack`."""
        files = {
            name: (path.name, stack.enter_context(path.open("rb")), _content_type(path)) for name, path in self.files
        }
        return http.build_request(
            self.method,
            self.path,
            json=self.json,
            data=self.data,
            files=files or None,
            headers={**config.auth_headers(), **self.headers},
        )

    def retries_status(self, status_code: int) -> bool:
        """Whether an answer with `status_code` is worth retrying."""
        if not self.repeatable:
            return status_code == 429  # refused before the body was used
        return status_code in RETRY_STATUSES or (self.conflict_means_busy and status_code == 409)

    def retries_error(self, error: httpx.TransportError) -> bool:
        """Whether a request that failed with `error` is worth retrying (a non-repeatable one: only if never sent)."""
        return self.repeatable or isinstance(error, httpx.ConnectError | httpx.ConnectTimeout)


STREAM = Call("GET", "")
"""How event streams and downloads are retried: repeatable reads."""

Outcome = httpx.Response | httpx.TransportError
"""What one attempt got: an answer (body read), or a connection error."""


def retry_delay(call: Call, policy: RetryPolicy, retry: int, outcome: Outcome) -> float | None:
    """Seconds to wait before retry number `retry` of `call` after `outcome`; None to give up."""
    if retry >= policy.retries:
        return None
    if isinstance(outcome, httpx.Response):
        if not call.retries_status(outcome.status_code):
            return None
        return policy.delay(retry, outcome.headers.get("Retry-After"))
    return policy.delay(retry) if call.retries_error(outcome) else None


def check_deadline(deadline: float | None, task_id: str) -> None:
    """`TimeoutError` once `time.monotonic()` is past `deadline` (None: no deadline)."""
    if deadline is not None and time.monotonic() > deadline:
        raise TimeoutError(f"task {task_id} did not end in time")


def generate_request(request: GenerateRequest | None, fields: dict[str, Any]) -> GenerateRequest:
    """The request to submit: `request`, or one validated from keyword `fields` (a `ValidationError` names bad ones)."""
    if request is not None and fields:
        raise TypeError("pass either a GenerateRequest or keyword fields, not both")
    return request if request is not None else GenerateRequest.model_validate(fields)


def _content_type(path: Path) -> str:
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def _task(task_id: str) -> str:
    return quote(task_id, safe="")


def submit(request: GenerateRequest, idempotency_key: str) -> Call:
    """`POST /generate` with only the fields that were set, under `idempotency_key`."""
    body = request.model_dump(mode="json", exclude_unset=True)
    return Call("POST", "/generate", json=body, headers={IDEMPOTENCY_HEADER: idempotency_key}, conflict_means_busy=True)


def status(task_id: str) -> Call:
    """`GET /status/{task_id}`."""
    return Call("GET", f"/status/{_task(task_id)}")


FILES_DELETED = 204
"""What `DELETE /tasks/{id}` answers for a task that already ended: its files are deleted, its status stays."""


def cancel(task_id: str) -> Call:
    """`DELETE /tasks/{task_id}`: cancels an unfinished task, deletes a finished one's files."""
    return Call("DELETE", f"/tasks/{_task(task_id)}")


def events_path(task_id: str) -> str:
    """The path of the task's event stream."""
    return f"/tasks/{_task(task_id)}/events"


def upload(path: Path) -> Call:
    """`POST /uploads` of one audio file."""
    return Call("POST", "/uploads", files=(("file", path),), repeatable=False)


def train_lora(
    dataset_zip: Path,
    style_name: str,
    options: TrainingOptions | None,
    webhook: str | None,
    webhook_events: list[WebhookEvent] | None,
) -> Call:
    """`POST /train/lora`: the zip, the style's name, the options that were set and the webhook fields."""
    form = {"style_name": style_name}
    if options is not None:
        chosen = options.model_dump(exclude_unset=True)
        form |= {name: str(value) for name, value in chosen.items() if value is not None}
    if webhook is not None:
        form["webhook"] = webhook
    if webhook_events:
        form["webhook_events"] = ",".join(webhook_events)
    return Call("POST", "/train/lora", data=form, files=(("file", dataset_zip),), repeatable=False)


def loras() -> Call:
    """`GET /loras`."""
    return Call("GET", "/loras")


def lora(lora_id: str) -> Call:
    """`GET /loras/{lora_id}`."""
    return Call("GET", f"/loras/{_task(lora_id)}")


def publish_lora(lora_id: str, public: bool) -> Call:
    """`PATCH /loras/{lora_id}`."""
    return Call("PATCH", f"/loras/{_task(lora_id)}", json={"public": public})


def delete_lora(lora_id: str) -> Call:
    """`DELETE /loras/{lora_id}`."""
    return Call("DELETE", f"/loras/{_task(lora_id)}")
