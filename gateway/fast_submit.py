"""The fast path of `POST /generate`: a plain submission answered without Litestar's per-request machinery.

Litestar's handler pipeline (guards, dependency resolution, the signature model, the response object) cost
about as much CPU as the submission itself (bench/README.md, "Submit against its floor"). This handler-level
middleware runs after routing, inside the app's metrics and hardening middleware, and takes a request on
only when it is plainly well-formed: `Content-Type: application/json`, a body of at most `FAST_BODY_BYTES`,
at most one `Idempotency-Key` of 1-255 characters, a valid API key (or auth off), and a body that decodes
and validates as `GenerateRequest` exactly as Litestar would (`decode_json`, then `model_validate`). Then
it runs the same submission (`accept`) as the Litestar handler and sends the same 202; an exception from
the submission is answered by Litestar's exception handlers, as from the handler. Anything else (a missing
key, another content type, a body the schema refuses, inline audio over the size) goes to the Litestar
handler untouched, with the body read so far handed on, so every error answer comes from one place.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from litestar import Litestar, Response
from litestar._asgi.utils import wrap_in_exception_handler
from litestar.datastructures import Headers, State
from litestar.serialization import decode_json
from litestar.status_codes import HTTP_202_ACCEPTED
from litestar.types import ASGIApp, Receive, ReceiveMessage, Scope, Send

from gateway.auth import AuthError, Principal, resolve_principal
from gateway.state import provide_gateway
from schemas.generation import GenerateRequest
from schemas.status import TaskAccepted, TaskState

FAST_BODY_BYTES = 64 * 1024
"""Largest body the fast path reads; bigger ones (inline audio) go through the Litestar handler."""
IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_IDEMPOTENCY_KEY = 255
JSON = "application/json"


@dataclass(frozen=True, slots=True)
class Accepted:
    """A submission's answer: the task, its status and LoRA, and whether it is a replay of an earlier one."""

    task_id: str
    status: TaskState
    lora_id: str | None
    replayed: bool

    def body(self) -> TaskAccepted:
        """The 202's JSON body."""
        return TaskAccepted(task_id=self.task_id, status=self.status, lora_id=self.lora_id)

    def headers(self) -> dict[str, str]:
        """The 202's headers besides the content type: `Location`, and `Idempotent-Replayed` for a replay."""
        headers = {"Location": f"/status/{self.task_id}"}
        if self.replayed:
            headers["Idempotent-Replayed"] = "true"
        return headers

    def response(self) -> Response[TaskAccepted]:
        """The 202 as the Litestar handlers answer it (`send_accepted` sends the same from the fast path)."""
        return Response(self.body(), status_code=HTTP_202_ACCEPTED, headers=self.headers())


Accept = Callable[[State, Principal, GenerateRequest, str | None], Awaitable[Accepted]]
"""The submission shared with the Litestar handler: (app state, caller, body, idempotency key) → answer."""


def idempotency_key(headers: Headers) -> tuple[bool, str | None]:
    """(usable, key): the request's one `Idempotency-Key` within the length limits, or none at all."""
    keys = headers.getall(IDEMPOTENCY_HEADER, [])
    if not keys:
        return True, None
    key = keys[0]
    return len(keys) == 1 and 1 <= len(key) <= MAX_IDEMPOTENCY_KEY, key


async def read_small_body(receive: Receive, limit: int) -> tuple[list[ReceiveMessage], bytes | None]:
    """(messages read, body): the whole body when it is at most `limit` bytes, else None and the messages read
    so far (to hand on with the rest)."""
    messages: list[ReceiveMessage] = []
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return messages, None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return messages, None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return messages, b"".join(chunks)


def replaying(messages: list[ReceiveMessage], receive: Receive) -> Receive:
    """A `receive` that first gives back `messages`, then reads on from `receive`."""
    pending = list(messages)

    async def replay() -> ReceiveMessage:
        return pending.pop(0) if pending else await receive()

    return replay


def parse_body(body: bytes) -> GenerateRequest | None:
    """The body as Litestar's handler would see it (`decode_json`, then `model_validate`); None when refused."""
    try:
        return GenerateRequest.model_validate(decode_json(body))
    except Exception:  # the handler answers it, with the field and what to fix
        return None


def principal_of(scope: Scope, headers: Headers) -> Principal | None:
    """The caller as the route's guard would resolve it; None when the guard would refuse."""
    gateway = provide_gateway(Litestar.from_scope(scope).state)
    try:
        return resolve_principal(headers, gateway.settings.auth_mode, gateway.keyring)
    except AuthError:
        return None


async def send_accepted(send: Send, accepted: Accepted) -> None:
    """Send the 202: the same headers and JSON body as the Litestar handler's `Response`."""
    body = accepted.body().model_dump_json().encode()
    headers = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in accepted.headers().items()]
    headers += [(b"content-type", JSON.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": HTTP_202_ACCEPTED, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def fast_submit(accept: Accept) -> Callable[[ASGIApp], ASGIApp]:
    """Handler-level middleware for `POST /generate`: the fast path for plain requests, `accept` the submission."""

    def middleware(app: ASGIApp) -> ASGIApp:
        async def fast_path(scope: Scope, receive: Receive, send: Send) -> None:
            headers = Headers.from_scope(scope)
            usable, key = idempotency_key(headers)
            length = headers.get("content-length")
            principal = principal_of(scope, headers) if usable else None
            if (
                principal is None
                or headers.get("content-type") != JSON
                or not (length and length.isdigit() and int(length) <= FAST_BODY_BYTES)
            ):
                await app(scope, receive, send)
                return
            messages, body = await read_small_body(receive, FAST_BODY_BYTES)
            data = parse_body(body) if body is not None else None
            if data is None:
                await app(scope, replaying(messages, receive), send)
                return
            accepted = await accept(Litestar.from_scope(scope).state, principal, data, key)
            await send_accepted(send, accepted)

        return wrap_in_exception_handler(fast_path)

    return middleware
