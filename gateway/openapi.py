"""The OpenAPI document made to match behaviour exactly where Litestar's generator leaves it loose.

- JSON bodies that refuse unknown fields (pydantic `extra="forbid"`) declare `additionalProperties: false`;
- the form's `style_name` declares the 1-100 characters the handler enforces;
- the live status stream is documented as `text/event-stream`, not JSON.
"""

from __future__ import annotations

from litestar.openapi.spec import OpenAPI, OpenAPIMediaType, OpenAPIType, Reference, Schema

CLOSED_BODIES = ("GenerateRequest", "LoraUpdate")
"""Request bodies whose models refuse unknown fields."""
EVENTS_PATH = "/tasks/{task_id}/events"
STYLE_NAME_MAX = 100


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
        style.pattern = r"\S"
    item = doc.paths.get(EVENTS_PATH) if doc.paths else None
    ok = item.get.responses.get("200") if item is not None and item.get and item.get.responses else None
    if ok is not None and not isinstance(ok, Reference):
        ok.content = {
            "text/event-stream": OpenAPIMediaType(
                schema=Schema(
                    type=OpenAPIType.STRING,
                    description="Server-sent events: `id` = version, `event` = status, `data` = the GET /status JSON.",
                )
            )
        }
