"""The OpenAPI document made to match behaviour exactly where Litestar's generator leaves it loose.

- the JSON request bodies' component schemas are pydantic's own (`model_json_schema(mode="validation")`, the
  contract's exported JSON Schemas), so every rule the gateway's validation applies is stated: bounds on
  optional numbers, `additionalProperties: false`, patterns, `enum`s, `oneOf` (see `schemas.rules`);
- the training form's text fields declare what the handler enforces: `style_name`'s 1-100 characters, the
  webhook's URL and events, each training option's bounds (`training_form_fields`);
- the files of the multipart forms declare what they must be (`encoding.file.contentType`): audio for
  `POST /uploads`, a zip for `POST /train/lora`;
- the live status stream is documented as `text/event-stream` whose `schema` describes one event (Open API
  3.1's convention for sequential media types; 3.2 calls it `itemSchema`): `id`, `event` and `data`, the
  last a JSON string holding the `GET /status` body (`contentMediaType` + `contentSchema`).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from litestar import Litestar
from litestar.enums import RequestEncodingType
from litestar.openapi.spec import (
    Discriminator,
    Encoding,
    OpenAPI,
    OpenAPIFormat,
    OpenAPIMediaType,
    OpenAPIType,
    Reference,
    Schema,
)
from litestar.routes import HTTPRoute
from pydantic import BaseModel

from schemas.status import TaskState
from schemas.training import TrainingOptions
from schemas.webhooks import WEBHOOK_EVENTS, WebhookRequest

COMPONENTS = "#/components/schemas/{model}"
_KEYWORDS = {field.metadata.get("alias", field.name): field.name for field in fields(Schema)}
"""JSON Schema keyword → `Schema` attribute."""
_SUBSCHEMA = {"items", "not", "if", "then", "else", "additionalProperties", "contains", "propertyNames"}
_SUBSCHEMA_LISTS = {"allOf", "anyOf", "oneOf", "prefixItems"}
_SUBSCHEMA_MAPS = {"properties", "patternProperties"}
EVENTS_PATH = "/tasks/{task_id}/events"
STYLE_NAME_MAX = 100
NOT_SPACE = "[^\\t-\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]"
"""One character `str.strip` keeps (ECMA's `\\S` differs from Python's: U+001C-U+001F, U+0085, U+FEFF)."""
WEBHOOK_EVENT = f"(?:{'|'.join(WEBHOOK_EVENTS)})"
UPLOAD_MEDIA_TYPES = "audio/wav, audio/flac, audio/mpeg, audio/ogg"
"""The containers `POST /uploads` accepts (`acefarm.infra.audio`'s allowlist)."""
FILE_MEDIA_TYPES = {"/uploads": UPLOAD_MEDIA_TYPES, "/train/lora": "application/zip"}
"""What the `file` part of each multipart form must be."""


def strict_openapi(app: Litestar) -> None:
    """Tighten the app's generated document in place (before it is first served)."""
    doc = app.openapi_schema
    _publish_contract_schemas(doc, json_body_models(app))
    schemas = doc.components.schemas if doc.components is not None and doc.components.schemas else {}
    form = schemas.get("TrainLoraForm")
    if form is not None and form.properties:
        form.properties.update(training_form_fields())
    _declare_file_types(doc)
    item = doc.paths.get(EVENTS_PATH) if doc.paths else None
    ok = item.get.responses.get("200") if item is not None and item.get and item.get.responses else None
    if ok is not None and not isinstance(ok, Reference):
        ok.content = {"text/event-stream": OpenAPIMediaType(schema=status_event_schema())}
        ok.description = "The task's status as server-sent events."


def training_form_fields() -> dict[str, Schema | Reference]:
    """The text fields of the `POST /train/lora` form as the handler reads them: `style_name`, the webhook
    fields and every `TrainingOptions` field with its bounds. A form has no null: an omitted or empty field
    takes the default."""
    options = TrainingOptions.model_json_schema(mode="validation")["properties"]
    webhook = WebhookRequest.model_json_schema(mode="validation")["properties"]["webhook"]
    fields = {name: _without_null(schema) for name, schema in {**options, "webhook": webhook}.items()}
    declared: dict[str, Schema | Reference] = {name: spec_schema(schema) for name, schema in fields.items()}
    declared["style_name"] = Schema(type=OpenAPIType.STRING, min_length=1, max_length=STYLE_NAME_MAX, pattern=NOT_SPACE)
    declared["webhook_events"] = Schema(
        type=OpenAPIType.STRING,
        pattern=f"^{WEBHOOK_EVENT}(?:,{WEBHOOK_EVENT}){{0,{len(WEBHOOK_EVENTS) - 1}}}$",
        description="Comma-separated events to deliver: start, progress, completed (default: completed).",
    )
    return declared


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with its `null` alternative (and its default) removed."""
    kept = [branch for branch in schema.get("anyOf", []) if branch != {"type": "null"}]
    rest = {keyword: value for keyword, value in schema.items() if keyword not in ("anyOf", "default")}
    return {**kept[0], **rest} if len(kept) == 1 else rest


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


def json_body_models(app: Litestar) -> list[type[BaseModel]]:
    """The pydantic models of the app's JSON request bodies."""
    found: dict[str, type[BaseModel]] = {}
    for route in app.routes:
        for handler in route.route_handlers if isinstance(route, HTTPRoute) else ():
            data = handler.parsed_data_field
            media_type = getattr(data.kwarg_definition, "media_type", RequestEncodingType.JSON) if data else None
            model = data.annotation if data is not None else None
            if media_type == RequestEncodingType.JSON and isinstance(model, type) and issubclass(model, BaseModel):
                found[model.__name__] = model
    return list(found.values())


def _publish_contract_schemas(doc: OpenAPI, models: list[type[BaseModel]]) -> None:
    """Replace each model's component (and those of the models and enums it uses) by pydantic's schema."""
    if doc.components is None or doc.components.schemas is None:
        return
    for model in models:
        schema = model.model_json_schema(mode="validation", ref_template=COMPONENTS)
        for name, definition in schema.pop("$defs", {}).items():
            doc.components.schemas[name] = spec_schema(definition)
        doc.components.schemas[model.__name__] = spec_schema(schema)


def spec_schema(schema: dict[str, Any]) -> Schema:
    """A JSON Schema (pydantic's, `$defs` removed and refs under `COMPONENTS`) as Litestar's `Schema`."""
    converted = _spec(schema)
    if not isinstance(converted, Schema):
        raise ValueError(f"a component must be a schema, not a reference: {schema}")
    return converted


def _spec(schema: Any) -> Schema | Reference | bool:
    if isinstance(schema, bool):
        return schema
    if set(schema) == {"$ref"}:
        return Reference(ref=schema["$ref"])
    values: dict[str, Any] = {}
    if "$ref" in schema:  # a reference with annotations (default, description) beside it
        values["all_of"] = [Reference(ref=schema["$ref"])]
        schema = {keyword: value for keyword, value in schema.items() if keyword != "$ref"}
    for keyword, value in schema.items():
        if keyword not in _KEYWORDS:
            raise ValueError(f"no OpenAPI counterpart for the JSON Schema keyword {keyword!r}")
        if keyword in _SUBSCHEMA:
            value = _spec(value)
        elif keyword in _SUBSCHEMA_LISTS:
            value = [_spec(item) for item in value]
        elif keyword in _SUBSCHEMA_MAPS:
            value = {name: _spec(item) for name, item in value.items()}
        elif keyword == "type":
            value = [OpenAPIType(item) for item in value] if isinstance(value, list) else OpenAPIType(value)
        elif keyword == "format":
            value = OpenAPIFormat(value)
        elif keyword == "discriminator":
            value = Discriminator(property_name=value["propertyName"], mapping=value.get("mapping"))
        values[_KEYWORDS[keyword]] = value
    return Schema(**values)
