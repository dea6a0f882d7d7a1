"""Where a generation request goes: through the 5 Hz LM planning stage, or straight to the DiT."""

from __future__ import annotations

from typing import Any

from acefarm.infra.settings import Settings
from gateway.errors import FieldError
from schemas import topics
from schemas.events import GenerationRequested, PlanningRequested
from schemas.generation import GenerationParams
from schemas.planning import PlanMode


def check_planner(settings: Settings, field: str) -> None:
    """400 naming `field` when this farm runs no planner (`PLANNER_ENABLED=false`)."""
    if not settings.planner_enabled:
        raise FieldError(
            field, "needs the 5 Hz LM planning stage, which this farm does not run (PLANNER_ENABLED=false)"
        )


def route(
    task_id: str,
    params: GenerationParams,
    settings: Settings,
    *,
    intake: str = topics.GENERATION_REQUESTS,
    **submitted: Any,
) -> tuple[str, GenerationRequested | PlanningRequested]:
    """(topic, event): LM work (`thinking`, `use_cot_*`) without given `audio_codes` → the planning topic (the
    planner forwards it to the intake of the pool `params.model` names); anything else → `intake`, the model
    pool's generation intake. `submitted`: the `SubmittedRequest` fields (owner, priority, request hash, webhook)."""
    if params.needs_lm():
        check_planner(settings, "thinking" if params.thinking else "use_cot_metas")
        planned = PlanningRequested(task_id=task_id, mode=PlanMode.GENERATE, params=params, **submitted)
        return topics.PLANNING_REQUESTS, planned
    return intake, GenerationRequested(task_id=task_id, params=params, **submitted)
