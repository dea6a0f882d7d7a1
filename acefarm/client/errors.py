"""What the client raises: `AcefarmError` for an answer or a connection that failed, `TaskFailed` for a job that did."""

from __future__ import annotations

import httpx
from pydantic import ValidationError

from schemas.status import ErrorBody, TaskState, TaskStatusResponse


class AcefarmError(Exception):
    """The API refused a request (`status_code`, the API's `detail`), or could not be reached (`status_code` None)."""

    def __init__(self, status_code: int | None, detail: str, body: ErrorBody | None = None) -> None:
        super().__init__(f"HTTP {status_code}: {detail}" if status_code is not None else detail)
        self.status_code = status_code
        self.detail = detail
        self.body = body

    @classmethod
    def from_response(cls, response: httpx.Response) -> AcefarmError:
        """The error an answer stands for, with the API's `ErrorBody` when the body is one (read the body first)."""
        try:
            body: ErrorBody | None = ErrorBody.model_validate_json(response.content)
        except ValidationError:
            body = None
        detail = body.detail if body is not None else (response.text.strip()[:500] or response.reason_phrase)
        return cls(response.status_code, detail, body)

    @classmethod
    def unreachable(cls, what: str, error: httpx.TransportError) -> AcefarmError:
        """The error for a request (`what`: method and URL) that got no answer after every retry."""
        return cls(None, f"{what} failed: {type(error).__name__}: {error}")

    @classmethod
    def after(cls, what: str, outcome: httpx.Response | httpx.TransportError) -> AcefarmError:
        """The error for the last outcome of a request: its answer (body read) or its connection error."""
        if isinstance(outcome, httpx.Response):
            return cls.from_response(outcome)
        return cls.unreachable(what, outcome)


class TaskFailed(AcefarmError):
    """A job ended `failed` or `cancelled`; `status` is its final status (`status.error` says why it failed)."""

    def __init__(self, status: TaskStatusResponse) -> None:
        why = status.error or status.message or status.status.value
        super().__init__(None, f"task {status.task_id} {status.status.value}: {why}")
        self.status = status

    @property
    def cancelled(self) -> bool:
        """Whether the job was cancelled rather than failed."""
        return self.status.status is TaskState.CANCELLED
