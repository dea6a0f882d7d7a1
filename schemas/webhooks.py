"""Webhooks in the contract: what a job asks for, what a receiver gets, and how it checks the signature.

A job names a `webhook` URL and the `webhook_events` it wants:
- `start`: a worker took the job (once per attempt: a redelivered job starts again);
- `progress`: a running job reported progress (best effort: never retried, the next one supersedes it);
- `completed`: the job ended, whatever the outcome (`status.status` is success, failed or cancelled).

Each delivery is a POST of a `schemas.status.WebhookPayload` (JSON) signed with HMAC-SHA256 over `"{t}.{body}"` with the
farm's `WEBHOOK_SECRET`, sent as `X-Acefarm-Signature: t=<unix seconds>,v1=<hex>`. `X-Acefarm-Delivery`
is the delivery's idempotency id: the same on every retry of it. Only the standard library is used here,
so a receiver can copy `verify_signature` (see docs/webhooks.md).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from schemas.rules import Matches, any_case

WebhookEvent = Literal["start", "progress", "completed"]
WEBHOOK_EVENTS: tuple[WebhookEvent, ...] = ("start", "progress", "completed")
DEFAULT_WEBHOOK_EVENTS: tuple[WebhookEvent, ...] = ("completed",)
MAX_WEBHOOK_URL = 2048

SIGNATURE_HEADER = "X-Acefarm-Signature"
DELIVERY_HEADER = "X-Acefarm-Delivery"
EVENT_HEADER = "X-Acefarm-Event"
ATTEMPT_HEADER = "X-Acefarm-Attempt"
DEFAULT_TOLERANCE_S = 300.0
"""How old a signature's timestamp may be (and how far in the future) before `verify_signature` refuses it."""


_PORT = "(?:[0-9]{0,4}|[0-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
WEBHOOK_URL = Matches(
    f"^{any_case('http')}[Ss]?://(?:[^/?#@\\t\\n\\r ]*@)?"
    f"(?:[A-Za-z0-9._~%!$&'()*+,;=-]+|\\[[0-9A-Fa-f:.]+\\])(?::{_PORT})?(?:[/?#][^\\t\\n\\r ]*)?$",
    "the webhook must be an http:// or https:// URL with a host (and a port up to 65535), without spaces",
)
"""An http(s) URL with a host and a valid port; whether the farm may call it is checked when it is used."""


def _unique_events(value: list[WebhookEvent]) -> list[WebhookEvent]:
    return [event for event in WEBHOOK_EVENTS if event in value]


WebhookUrl = Annotated[
    str,
    Field(min_length=1, max_length=MAX_WEBHOOK_URL, description="http(s) URL that receives signed POSTs."),
    WEBHOOK_URL,
]
WebhookEvents = Annotated[
    list[WebhookEvent],
    Field(min_length=1, max_length=len(WEBHOOK_EVENTS), description="Which events to deliver."),
    AfterValidator(_unique_events),
]


class WebhookTarget(BaseModel):
    """Where a task's webhooks go and which events are wanted."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: WebhookUrl
    events: WebhookEvents = Field(default_factory=lambda: list(DEFAULT_WEBHOOK_EVENTS))


class WebhookRequest(BaseModel):
    """The webhook fields of a job request (`POST /generate`, `POST /train/lora`, request events)."""

    webhook: Annotated[WebhookUrl | None, Field(description="URL called with signed POSTs as the job moves.")] = None
    webhook_events: Annotated[
        WebhookEvents, Field(description="Events to deliver: 'start', 'progress' and/or 'completed'.")
    ] = Field(default_factory=lambda: list(DEFAULT_WEBHOOK_EVENTS))

    def webhook_target(self) -> WebhookTarget | None:
        """The task's webhook target, or None when no webhook was asked for."""
        return None if self.webhook is None else WebhookTarget(url=self.webhook, events=self.webhook_events)


WebhookState = Literal["delivered", "retrying", "failed"]


class WebhookStatus(BaseModel):
    """The latest recorded delivery of a task's webhook (shown on its status)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    delivery_id: str
    event: WebhookEvent
    state: Annotated[WebhookState, Field(description="delivered; retrying (a retry is scheduled); failed (gave up).")]
    attempts: Annotated[int, Field(ge=1)]
    last_error: str | None = None
    updated_at: datetime
    status_version: Annotated[
        int, Field(ge=0, description="The status version this record produced (a webhook service detail).")
    ] = 0


class InvalidSignature(ValueError):
    """A webhook whose signature is missing, malformed, too old or wrong."""


def signature(secret: str | bytes, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256 of `"{timestamp}.{body}"` with `secret`."""
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def signature_header(secret: str | bytes, body: bytes, timestamp: int | None = None) -> str:
    """The `X-Acefarm-Signature` value for `body`: `t=<unix seconds>,v1=<hex>`."""
    at = int(time.time()) if timestamp is None else timestamp
    return f"t={at},v1={signature(secret, at, body)}"


def verify_signature(
    secret: str | bytes,
    headers: Mapping[str, str],
    body: bytes,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> None:
    """Check a received webhook: raise `InvalidSignature` unless `X-Acefarm-Signature` signs `body` with
    `secret` and its timestamp is within `tolerance_s` of `now` (header names are case-insensitive;
    `body` is the raw request body, before any JSON parsing)."""
    value = next((v for k, v in headers.items() if k.lower() == SIGNATURE_HEADER.lower()), None)
    if value is None:
        raise InvalidSignature(f"no {SIGNATURE_HEADER} header")
    timestamp, candidates = None, []
    for item in value.split(","):
        name, _, text = item.strip().partition("=")
        if name == "t" and text.isdigit():
            timestamp = int(text)
        elif name == "v1":
            candidates.append(text)
    if timestamp is None or not candidates:
        raise InvalidSignature(f"malformed {SIGNATURE_HEADER}: expected t=<seconds>,v1=<hex>")
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        raise InvalidSignature("the signature's timestamp is outside the tolerance (replayed or clock skew)")
    expected = signature(secret, timestamp, body)
    if not any(hmac.compare_digest(expected, candidate) for candidate in candidates):
        raise InvalidSignature("the signature does not match the body")
