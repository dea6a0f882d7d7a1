"""What a result says it used: metadata values and their sources."""

from __future__ import annotations

from schemas.generation import GenerationParams
from schemas.planning import LmResult
from schemas.results import ValueSource, lm_fields, used_metadata


def test_given_values_are_user_and_untouched_ones_default() -> None:
    params = GenerationParams(prompt="x", duration=12.5, bpm=96, vocal_language="ja")
    meta = used_metadata(params)
    assert (meta.bpm, meta.key, meta.time_signature, meta.language, meta.duration) == (96, None, None, "ja", 12.5)
    assert meta.source.model_dump() == {
        "bpm": "user",
        "key": "default",
        "time_signature": "default",
        "language": "user",
        "duration": "user",
    }
    assert used_metadata(GenerationParams(prompt="x", duration=5)).source.language is ValueSource.DEFAULT


def test_values_the_language_model_decided_are_lm() -> None:
    params = GenerationParams(prompt="x", duration=30, bpm=120, key="A minor", time_signature=4)
    meta = used_metadata(params, lm_fields=("bpm", "key", "duration"))
    assert (meta.source.bpm, meta.source.key, meta.source.duration) == (ValueSource.LM,) * 3
    assert meta.source.time_signature is ValueSource.USER


def test_a_plans_decided_fields_are_named_as_the_metadata_names_them() -> None:
    plan = LmResult(decided_by_lm=["bpm", "caption", "vocal_language", "time_signature"])
    assert lm_fields(plan) == {"bpm", "language", "time_signature"}
    assert lm_fields(None) == set()
