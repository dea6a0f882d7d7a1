"""Rules that the contract's JSON Schemas state exactly as pydantic enforces them.

A rule pydantic checks in a validator is invisible to the exported JSON Schema and the OpenAPI document, so
a client generated from them sends values the gateway refuses. These spell each rule once, check it with a
readable message and declare it in the schema:
- `Matches`: a string matching a regular expression whole; the expression uses only what Python's `re` and
  ECMA-262 (JSON Schema's dialect) read alike: ASCII character classes, no `\\s`/`\\d`/`\\w`, no inline flags;
- `OneOf`: one of a few values (`enum`);
- `StrictNumbers`: a base whose number fields refuse `true`/`false` and numeric strings, and whose boolean
  fields refuse anything but `true`/`false`, as `type: integer|number|boolean` say (lax validation would
  take `true` as 1, `"10"` as 10 and `0` as false);
- `Base64Audio`: inline audio, a non-empty base64 string (`contentEncoding`/`contentMediaType`); whether it
  decodes to readable audio is checked when it is used (422 when not);
- `cross_field`: the error of a rule that compares fields (no JSON Schema states it): the body is well-formed
  but unusable as it is, which the gateway answers with 422 rather than 400.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from types import NoneType, UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, Field, GetCoreSchemaHandler, GetJsonSchemaHandler, ValidationInfo, field_validator
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

CROSS_FIELD = "cross_field"
"""The pydantic error type of a broken cross-field rule."""
WHITESPACE = "[\\t\\n\\r ]"
"""The whitespace a `Matches` expression allows (ASCII, alike in both dialects)."""


def any_case(word: str) -> str:
    """An expression matching `word` in any letter case (ECMA-262 has no inline case-insensitive flag)."""
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else re.escape(c) for c in word)


AUDIO_MEDIA_TYPE = "audio/*"
"""What inline audio must decode to: wav, flac, mp3 or ogg (`acefarm.infra.audio`'s allowlist)."""
Base64Audio = Annotated[
    str,
    Field(min_length=1, json_schema_extra={"contentEncoding": "base64", "contentMediaType": AUDIO_MEDIA_TYPE}),
]
"""An audio file's bytes, base64-encoded (a `data:` URL's base64 also reads)."""


def cross_field(message: str) -> PydanticCustomError:
    """The error to raise when fields are valid one by one but not together; `message` says what to fix."""
    return PydanticCustomError(CROSS_FIELD, "{reason}", {"reason": message})


@dataclass(frozen=True)
class Matches:
    """`Annotated` metadata: the string must match `pattern` whole (JSON Schema `pattern`), else `message`."""

    pattern: str
    message: str

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        """The inner schema, then the match."""
        compiled = re.compile(self.pattern)

        def check(value: str) -> str:
            if compiled.fullmatch(value) is None:
                raise ValueError(self.message)
            return value

        return core_schema.no_info_after_validator_function(check, handler(source))

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        """The inner JSON Schema with `pattern`."""
        return {**handler(schema), "pattern": self.pattern}


@dataclass(frozen=True)
class OneOf:
    """`Annotated` metadata: the value must be one of `values` (JSON Schema `enum`), else `message`."""

    values: tuple[Any, ...]
    message: str

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        """The inner schema, then the membership check."""

        def check(value: Any) -> Any:
            if value not in self.values:
                raise ValueError(self.message)
            return value

        return core_schema.no_info_after_validator_function(check, handler(source))

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        """The inner JSON Schema with `enum`."""
        return {**handler(schema), "enum": list(self.values)}


def _types(annotation: Any) -> set[Any]:
    members: Sequence[Any] = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else (annotation,)
    return {member for member in members if member is not NoneType}


def _refused(value: object, types: AbstractSet[Any]) -> str | None:
    """Why lax validation must not take `value` for a field of `types`, or None."""
    if types & {int, float} and isinstance(value, bool | str):
        return "must be a number, not true, false or text"
    if types == {bool} and value is not None and not isinstance(value, bool):
        return "must be true or false"
    return None


class StrictNumbers(BaseModel):
    """Base of request models: a field typed `int`/`float` takes JSON numbers only, one typed `bool` booleans only."""

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_are_numbers(cls, value: object, info: ValidationInfo) -> object:
        types = _field_types(cls, info.field_name or "")
        reason = _refused(value, types) if types else None
        if reason is not None:
            raise ValueError(reason)
        return value


@functools.cache
def _field_types(model: type[BaseModel], name: str) -> frozenset[Any]:
    """The types a field of `model` is annotated with (`_types`), worked out once per model and field."""
    field = model.model_fields.get(name)
    return frozenset(_types(field.annotation)) if field is not None else frozenset()
