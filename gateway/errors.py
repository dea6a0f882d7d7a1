"""Error answers: one JSON shape (`schemas.status.ErrorBody`) whose `detail` says what to fix."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response
from litestar.exceptions import ClientException, HTTPException, SerializationException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.status_codes import HTTP_400_BAD_REQUEST, HTTP_413_REQUEST_ENTITY_TOO_LARGE, HTTP_422_UNPROCESSABLE_ENTITY

from gateway.hardening import without_local_paths
from schemas.rules import CROSS_FIELD
from schemas.status import ErrorBody

_PREFIXES = ("Value error, ", "Assertion failed, ")


class FieldError(HTTPException):
    """A request field that cannot be used; `detail` reads '<field>: <what to fix>'."""

    status_code = HTTP_400_BAD_REQUEST

    def __init__(self, field: str, message: str, status_code: int = HTTP_400_BAD_REQUEST) -> None:
        super().__init__(
            detail=f"{field}: {message}",
            status_code=status_code,
            extra=[{"key": field, "message": message, "source": "body"}],
        )


def _readable(item: dict[str, Any]) -> str:
    message = str(item.get("message", "invalid value"))
    for prefix in _PREFIXES:
        message = message.removeprefix(prefix)
    key = item.get("key")
    if key == "data" or not key:
        if message.startswith("Input should be a valid dictionary"):
            return "body: must be a JSON object with the request fields"
        return message
    return f"{key}: {message}"


def readable_validation_detail(extra: Any) -> str | None:
    """Join Litestar/pydantic error items into one message such as 'duration: Input should be ...'."""
    if not isinstance(extra, list) or not extra:
        return None
    return "; ".join(_readable(item) for item in extra if isinstance(item, dict)) or None


def is_cross_field(exc: ValidationException) -> bool:
    """Whether every error behind `exc` is a broken cross-field rule (`schemas.rules.cross_field`).

    Litestar raises the validation failure from the pydantic errors (`__cause__.errors`); a body that breaks
    one-field rules never reaches the cross-field ones, so the two kinds do not mix."""
    errors = getattr(exc.__cause__, "errors", None)
    if not isinstance(errors, list) or not errors:
        return False
    return all(isinstance(error, dict) and error.get("type") == CROSS_FIELD for error in errors)


def _scrubbed(extra: Any) -> Any:
    if isinstance(extra, list):
        return [_scrubbed(item) for item in extra]
    if isinstance(extra, dict):
        return {key: _scrubbed(value) for key, value in extra.items()}
    return without_local_paths(extra) if isinstance(extra, str) else extra


def client_error_handler(_: Request[Any, Any, Any], exc: ClientException) -> Response[dict[str, Any]]:
    """4xx answers as `ErrorBody`; validation failures list each bad field and what is wrong with it.

    A body that breaks the document's schema answers 400; one whose fields are valid but unusable together
    (a cross-field rule) answers 422.

    Local file paths (temporary files, the data directory) never reach the client."""
    detail, status_code = str(exc.detail), exc.status_code
    if isinstance(exc, ValidationException):
        detail = readable_validation_detail(exc.extra) or detail
        status_code = HTTP_422_UNPROCESSABLE_ENTITY if is_cross_field(exc) else status_code
    elif isinstance(exc.__cause__, SerializationException):
        detail = f"body is not valid JSON ({detail.removeprefix('JSON is malformed: ')})"
    elif exc.status_code == HTTP_413_REQUEST_ENTITY_TOO_LARGE and detail == "Request Entity Too Large":
        detail = "body: the request is too large; each audio input may be at most MAX_INPUT_AUDIO_BYTES"
    body: dict[str, Any] = {"status_code": status_code, "detail": without_local_paths(detail)}
    if exc.extra:
        body["extra"] = _scrubbed(exc.extra)
    return Response(body, status_code=status_code, headers=exc.headers)


_MEANINGS = {
    400: "A field is invalid, or the request costs more than the key allows (`extra.limit`: cost); `detail` "
    "says what to fix.",
    401: "No valid API key: send it as `Authorization: Bearer <key>` or `X-API-Key` (see `WWW-Authenticate`).",
    403: "The API key does not allow this (e.g. the requested priority; `extra.limit` names the limit), or a "
    "cross-site form post (send the request from an API client with a key).",
    404: "Not found.",
    409: "Conflicts with the task's current state.",
    413: "Too large.",
    415: "Wrong Content-Type.",
    416: "The Range lies outside the file.",
    422: "Well-formed but unusable (the schema cannot say so): fields valid one by one but not together, inline "
    "audio that is not readable audio within the limits, a key, LoRA or model this farm does not have (or a task "
    "type its models cannot do), an Idempotency-Key already used with a different body, or a webhook the farm "
    "may not call; `detail` says what to fix.",
    429: "A limit of the API key (`extra.limit`: rate or unfinished); retry after `Retry-After` seconds.",
    503: "Not ready or busy, or the farm's queue is full (`extra.limit`: backlog); retry after `Retry-After` seconds.",
}


def error_responses(*codes: int, rules: str = "") -> dict[int, ResponseSpec]:
    """OpenAPI descriptions of the error answers a route can give (all `ErrorBody`); `rules`: the route's
    cross-field rules, appended to the 422's description."""
    meanings = {code: _MEANINGS[code] for code in codes}
    if rules and 422 in meanings:
        meanings[422] += f" The cross-field rules: {rules}"
    return {
        code: ResponseSpec(data_container=ErrorBody, description=meaning, generate_examples=False)
        for code, meaning in meanings.items()
    }
