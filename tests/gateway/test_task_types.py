"""Which task types the gateway accepts for the configured model."""

import pytest
from pydantic import ValidationError

from acefarm.infra.settings import Settings
from gateway.task_types import accepted_task_types
from schemas.generation import STEM_TASKS, TaskType


def settings(**fields: object) -> Settings:
    return Settings(_env_file=None, **fields)  # type: ignore[call-arg, arg-type]


def test_turbo_model_id_drops_the_stem_tasks() -> None:
    assert accepted_task_types(settings()) == frozenset(TaskType) - STEM_TASKS


def test_a_base_model_or_a_local_checkpoint_accepts_everything(tmp_path: object) -> None:
    assert accepted_task_types(settings(model_id="ACE-Step/acestep-v15-base-diffusers")) == frozenset(TaskType)
    assert accepted_task_types(settings(model_path=tmp_path)) == frozenset(TaskType)


def test_an_explicit_list_wins() -> None:
    assert accepted_task_types(settings(task_types="text2music, cover")) == {TaskType.TEXT2MUSIC, TaskType.COVER}


def test_an_unknown_task_type_is_a_settings_error() -> None:
    with pytest.raises(ValidationError, match="unknown task types"):
        settings(task_types="text2music,remix")
