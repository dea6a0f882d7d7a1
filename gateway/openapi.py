"""The OpenAPI document made to match behaviour exactly where Litestar's generator leaves it loose.

- JSON bodies that refuse unknown fields (pydantic `extra="forbid"`) declare `additionalProperties: false`;
- the form's `style_name` declares the 1-100 characters the handler enforces;
- the files of the multipart forms declare what they must be (`encoding.file.contentType`): audio for
  `POST /uploads`, a zip for `POST /train/lora`;
- the live status stream is documented as `text/event-stream` whose `schema` describes one event (Open API
  3.1's convention for sequential media types; 3.2 calls it `itemSchema`): `id`, `event` and `data`, the
  last a JSON string holding the `GET /status` body (`contentMediaType` + `contentSchema`).
"""

from __future__ import annotations

from litestar.openapi.spec import Encoding, OpenAPI, OpenAPIMediaType, OpenAPIType, Reference, Schema

from schemas.status import TaskState

CLOSED_BODIES = ("GenerateRequest", "LoraUpdate")
"""Request bodies whose models refuse unknown fields."""
EVENTS_PATH = "/tasks/{task_id}/events"
STYLE_NAME_MAX = 100
NOT_SPACE = "[^\\t-\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"
"""One character `str.strip` keeps (ECMA's `\\S` differs from Python's: U+001C-U+001F, U+0085, U+FEFF)."""
UPLOAD_MEDIA_TYPES = "audio/wav, audio/flac, audio/mpeg, audio/ogg"
"""The containers `POST /uploads` accepts (`acefarm.infra.audio`'s allowlist)."""
FILE_MEDIA_TYPES = {"/uploads": UPLOAD_MEDIA_TYPES, "/train/lora": "application/zip"}
"""What the `file` part of each multipart form must be."""


def strict_openapi(doc: OpenAPI) -> None:
    """Tighten the generated document in place (before it is first served)."""
    schemas = doc.components.schemas if doc.components is not None and doc.components.schemas else {}
    for name in CLOSED_BODIES:
        if name in schemas:
            schemas[name].additional_properties = False
    form = schemas.get("TrainLoraForm")
    style = form.properties.get("style_name") if form is not None and form.properties else None
    if isinstance(style, Schema):
        style.min_length, style.max_length = 1, STYLE_NAME_MAX
        style.pattern = NOT_SPACE
    _declare_file_types(doc)
    item = doc.paths.get(EVENTS_PATH) if doc.paths else None
    ok = item.get.responses.get("200") if item is not None and item.get and item.get.responses else None
    if ok is not None and not isinstance(ok, Reference):
        ok.content = {"text/event-stream": OpenAPIMediaType(schema=status_event_schema())}
        ok.description = "The task's status as server-sent events."


def status_event_schema() -> Schema:
    """One event of the live status stream, as an SSE parser reads it."""
    return Schema(
        type=OpenAPIType.OBJECT,
        description="Server-sent events: `id` = version, `event` = status, `data` = the GET /status JSON.",
        required=["id", "event", "data"],
        properties={
            "id": Schema(type=OpenAPIType.STRING, pattern=r"^[0-9]+$", description="The status version."),
            "event": Schema(type=OpenAPIType.STRING, enum=[state.value for state in TaskState]),
            "data": Schema(
                type=OpenAPIType.STRING,
                content_media_type="application/json",
                content_schema=Reference(ref="#/components/schemas/TaskStatusResponse"),
            ),
        },
    )


def _declare_file_types(doc: OpenAPI) -> None:
    """Set `encoding.file.contentType` on each multipart form in `FILE_MEDIA_TYPES`."""
    for path, media_types in FILE_MEDIA_TYPES.items():
        item = doc.paths.get(path) if doc.paths else None
        body = item.post.request_body if item is not None and item.post else None
        form = body.content.get("multipart/form-data") if body is not None and not isinstance(body, Reference) else None
        if form is not None:
            form.encoding = {"file": Encoding(content_type=media_types)}
