"""Which task types the gateway accepts: rejecting up front what the configured model cannot do."""

from __future__ import annotations

from acefarm.infra.settings import Settings
from gateway.errors import FieldError
from schemas.generation import STEM_TASKS, TaskType


def accepted_task_types(settings: Settings) -> frozenset[TaskType]:
    """TASK_TYPES as a set; `auto` drops the stem tasks for a turbo MODEL_ID (the default weights)."""
    if settings.task_types.strip().lower() != "auto":
        names = [name.strip() for name in settings.task_types.split(",") if name.strip()]
        return frozenset(TaskType(name) for name in names)
    if settings.model_path is None and "turbo" in settings.model_id.lower():
        return frozenset(TaskType) - STEM_TASKS
    return frozenset(TaskType)


def check_task_type(task_type: TaskType, accepted: frozenset[TaskType], model: str) -> None:
    """400 naming the field when `task_type` is not available on the configured model."""
    if task_type not in accepted:
        choices = ", ".join(sorted(t.value for t in accepted))
        raise FieldError(
            "task_type",
            f"'{task_type.value}' is not available with the configured model ({model}); use one of: {choices}",
        )
