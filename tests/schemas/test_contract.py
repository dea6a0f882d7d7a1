"""The contract: committed JSON Schemas match the models, events round-trip, bad input says what to fix."""

import json
from typing import NamedTuple

import jsonschema
import pytest
from pydantic import ValidationError

from schemas import topics
from schemas.events import (
    EVENT_MODELS,
    DeadLetter,
    GenerationRequested,
    TaskProgress,
    TaskSucceeded,
    parse_event,
    parse_lifecycle,
)
from schemas.export import DEFAULT_DIR, schema_documents
from schemas.generation import GenerateRequest, GenerationParams, TaskType
from schemas.status import Stage, StoredFile


def test_committed_json_schemas_match_the_models() -> None:
    docs = schema_documents()
    committed = {p.name: p.read_text() for p in DEFAULT_DIR.glob("*.json")}
    assert set(committed) == set(docs), "run `acefarm schemas export` and commit schemas/jsonschema"
    for name, text in docs.items():
        assert committed[name] == text, f"{name} is stale: run `acefarm schemas export`"


def test_an_event_written_by_another_team_from_the_json_schema_is_accepted() -> None:
    schema = json.loads((DEFAULT_DIR / "GenerationRequested.json").read_text())
    foreign = {
        "type": "generation.requested",
        "event_id": "e-1",
        "task_id": "job-42",
        "occurred_at": "2026-11-25T10:00:00Z",
        "schema_version": 1,
        "params": {"prompt": "lofi piano", "duration": 12.5, "bpm": 80, "audio_format": "flac"},
    }
    jsonschema.validate(foreign, schema)
    event = parse_event(json.dumps(foreign))
    assert isinstance(event, GenerationRequested)
    assert event.params.duration == 12.5
    assert event.params.audio_format == "flac"


def test_every_event_round_trips_through_bytes() -> None:
    params = GenerationParams(prompt="x", duration=10)
    samples = [
        GenerationRequested(task_id="t1", params=params),
        TaskProgress(task_id="t1", attempt="a", stage=Stage.DIFFUSION, progress=0.5, step=4, total_steps=8),
        TaskSucceeded(
            task_id="t1",
            attempt="a",
            files=[StoredFile(key="outputs/t1/take-0.wav", content_type="audio/wav", size_bytes=3)],
        ),
    ]
    for event in samples:
        assert parse_event(event.to_bytes()) == event
    assert {m.model_fields["type"].default for m in EVENT_MODELS} >= {"generation.requested", "task.succeeded"}


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b'{"type": "task.started", "task_id": "t1"}',
        b'{"type": "nope", "task_id": "t1"}',
        b'{"type": "task.progress", "task_id": "../etc", "attempt": "a", "stage": "diffusion", "progress": 0.1}',
    ],
)
def test_malformed_events_are_rejected(raw: bytes) -> None:
    with pytest.raises(ValidationError):
        parse_lifecycle(raw)


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ({"type": "task.started", "attempt": "a" * 65, "worker": "w"}, "attempt"),
        ({"type": "task.started", "attempt": "", "worker": "w"}, "attempt"),
        ({"type": "task.started", "attempt": "a", "worker": "w" * 513}, "worker"),
        (
            {"type": "task.progress", "attempt": "a", "stage": "diffusion", "progress": 0.1, "message": "m" * 1001},
            "message",
        ),
        ({"type": "task.succeeded", "attempt": "a" * 65}, "attempt"),
        ({"type": "task.succeeded", "attempt": "a", "lora_id": "l" * 65}, "lora_id"),
        ({"type": "task.failed", "attempt": "a", "error": "e" * 4001}, "error"),
        ({"type": "task.failed", "attempt": "a" * 65, "error": "e"}, "attempt"),
        ({"type": "task.cancelled", "reason": "r" * 201}, "reason"),
    ],
)
def test_event_strings_have_maximum_lengths(event: dict[str, object], field: str) -> None:
    raw = {"task_id": "t1", **event}
    with pytest.raises(ValidationError) as info:
        parse_lifecycle(json.dumps(raw))
    assert info.value.errors()[0]["loc"][1] == field
    names = {model.model_fields["type"].default: model.__name__ for model in EVENT_MODELS}
    schema = json.loads((DEFAULT_DIR / f"{names[event['type']]}.json").read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(raw, schema)


class Record(NamedTuple):
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def test_a_dead_letter_cuts_what_it_copies_to_the_limits() -> None:
    record = Record(topic="t", partition=0, offset=1, key=b"k" * 5000, value=b"v" * 200_000)
    dead = DeadLetter.of_record(record, "e" * 9000, "c")
    assert (len(dead.key or ""), len(dead.value), len(dead.error)) == (1024, 100_000, 4000)
    assert parse_event(dead.to_bytes()) == dead


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"prompt": "x", "duration": 9999}, "less than or equal to 600"),
        ({"prompt": "", "duration": 10}, "at least 1 character"),
        ({"prompt": "x", "duration": 10, "key": "H major"}, "key must look like"),
        ({"prompt": "x", "duration": 10, "time_signature": 5}, "time_signature must be 2, 3, 4 or 6"),
        ({"prompt": "x", "duration": 10, "audio_format": "aiff"}, "'mp3', 'opus', 'aac' or 'ogg'"),
        ({"prompt": "x", "duration": 10, "task_type": "repaint"}, "needs source audio"),
        ({"prompt": "x", "duration": 10, "task_type": "cover"}, "needs src_audio or reference_audio"),
        ({"prompt": "x", "duration": 10, "tempo": 120}, "Extra inputs are not permitted"),
        ({"prompt": "x", "duration": 10, "lora_id": "Bad Id!"}, "should match pattern"),
        ({"prompt": "x", "duration": 10, "loras": [{"lora_id": f"l{i}"} for i in range(5)]}, "at most 4 items"),
        ({"prompt": "x", "duration": 10, "loras": [{"lora_id": "a"}, {"lora_id": "a"}]}, "more than once"),
        ({"prompt": "x", "duration": 10, "lora_id": "a", "loras": [{"lora_id": "b"}]}, "not both"),
        ({"prompt": "x", "duration": 10, "loras": [{"lora_id": "a", "scale": 3}]}, "less than or equal to 2"),
    ],
)
def test_bad_generate_bodies_say_what_to_fix(body: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        GenerateRequest.model_validate(body)
    assert message in str(info.value)


def test_style_id_is_an_alias_and_style_joins_the_caption() -> None:
    request = GenerateRequest.model_validate(
        {"prompt": "synthwave", "duration": 30, "style_id": "neon-1", "style": "80s"}
    )
    assert request.lora_id == "neon-1"
    assert request.caption() == "synthwave, style: 80s"
    params = request.to_params(src_audio_key=None, reference_audio_key=None)
    assert params.lora_id == "neon-1"
    assert params.task_type is TaskType.TEXT2MUSIC


@pytest.mark.parametrize(
    "body, keys",
    [
        ({"prompt": "p", "duration": 5}, (None, None)),
        ({"prompt": "p", "duration": 5, "lora_id": "neon-1", "lora_scale": 0.5, "key": " C major "}, (None, None)),
        ({"prompt": "p", "duration": 5, "task_type": "cover", "reference_audio": "UklGRg=="}, (None, "inputs/t/r.wav")),
        ({"prompt": "p", "duration": 9, "task_type": "extend", "src_audio_key": "uploads/a/s.wav"}, (None, None)),
        ({"prompt": "p", "duration": 5, "loras": [{"lora_id": "a", "scale": 2}], "vocal_language": "EN"}, (None, None)),
    ],
)
def test_to_params_equals_validating_the_params_again(body: dict[str, object], keys: tuple[str | None, ...]) -> None:
    request = GenerateRequest.model_validate(body)
    params = request.to_params(src_audio_key=keys[0], reference_audio_key=keys[1])
    excluded = {"reference_audio", "src_audio", "priority", "webhook", "webhook_events"}
    validated = GenerationParams(
        **{**request.model_dump(exclude=excluded), "src_audio_key": keys[0] or request.src_audio_key}
        | {"reference_audio_key": keys[1] or request.reference_audio_key}
    )
    assert params == validated
    assert params.model_dump_json() == validated.model_dump_json()
    assert params.model_fields_set == validated.model_fields_set


def test_instrumental_replaces_lyrics() -> None:
    assert (
        GenerationParams(prompt="x", duration=5, lyrics="la la", instrumental=True).lyrics_for_model()
        == "[instrumental]"
    )
    assert GenerationParams(prompt="x", duration=5, lyrics="la la").lyrics_for_model() == "la la"


def test_topic_names_are_unique_and_namespaced() -> None:
    assert len(set(topics.ALL)) == len(topics.ALL)
    assert all(name.startswith("acefarm.") for name in topics.ALL)
