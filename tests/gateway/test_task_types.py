"""Model pools from the settings, and which pool the gateway routes a request to."""

import pytest
from pydantic import ValidationError

from acefarm.infra.pools import ModelPool, configured_pools, default_task_types, pool_keys, request_topics
from acefarm.infra.settings import Settings
from gateway.errors import FieldError
from gateway.models import model_list
from gateway.task_types import choose_pool
from schemas import topics
from schemas.generation import STEM_TASKS, TaskType

ALL = frozenset(TaskType)
NO_STEMS = ALL - STEM_TASKS


def settings(**fields: object) -> Settings:
    return Settings(_env_file=None, **fields)  # type: ignore[call-arg, arg-type]


def test_turbo_model_id_drops_the_stem_tasks() -> None:
    assert default_task_types(settings()) == NO_STEMS


def test_a_base_model_or_a_local_checkpoint_accepts_everything(tmp_path: object) -> None:
    assert default_task_types(settings(model_id="ACE-Step/acestep-v15-base-diffusers")) == ALL
    assert default_task_types(settings(model_path=tmp_path)) == ALL


def test_an_explicit_list_wins() -> None:
    assert default_task_types(settings(task_types="text2music, cover")) == {TaskType.TEXT2MUSIC, TaskType.COVER}


def test_an_unknown_task_type_is_a_settings_error() -> None:
    with pytest.raises(ValidationError, match="unknown task types"):
        settings(task_types="text2music,remix")


def test_without_pool_settings_the_farm_is_one_default_pool_on_the_plain_topic() -> None:
    (pool,) = configured_pools(settings())
    assert (pool.name, pool.default, pool.task_types, pool.intake) == (
        "default",
        True,
        NO_STEMS,
        topics.GENERATION_REQUESTS,
    )
    assert request_topics(settings()) == [topics.GENERATION_REQUESTS]


def test_model_pools_name_their_topics_and_task_types() -> None:
    farm = settings(default_model="turbo", model_pools="base; sft=text2music, cover; turbo=text2music")
    pools = {pool.name: pool for pool in configured_pools(farm)}
    assert list(pools) == ["turbo", "base", "sft"]
    assert pools["turbo"].task_types == {TaskType.TEXT2MUSIC}, "the default pool's own entry overrides TASK_TYPES"
    assert pools["base"].task_types == ALL and pools["base"].intake == "acefarm.generation.requests.base"
    assert pools["sft"].task_types == {TaskType.TEXT2MUSIC, TaskType.COVER}
    assert configured_pools(settings(model_pools="xl-turbo"))[1].task_types == NO_STEMS, "turbo in the name"
    worker = settings(default_model="turbo", model_pools="base", model_name="solo")
    assert request_topics(worker) == [
        topics.GENERATION_REQUESTS,
        "acefarm.generation.requests.base",
        "acefarm.generation.requests.solo",
    ]
    assert pool_keys(worker) == [None, "base", "solo"]


def test_each_pool_has_its_intake_ready_topic_and_group() -> None:
    default = (topics.generation_requests(None), topics.generation_ready(None), topics.gpu_workers_group(None))
    assert default == (topics.GENERATION_REQUESTS, topics.GENERATION_READY, topics.GPU_WORKERS_GROUP)
    named = (topics.generation_requests("base"), topics.generation_ready("base"), topics.gpu_workers_group("base"))
    assert named == ("acefarm.generation.requests.base", "acefarm.generation.ready.base", "gpu-workers.base")
    assert topics.is_generation_requests(named[0]) and not topics.is_generation_requests(named[1])
    assert topics.is_generation_ready(named[1]) and not topics.is_generation_ready(named[0])


@pytest.mark.parametrize(
    ("value", "message"),
    [("Base", "not a model name"), ("base; base", "twice"), ("base=remix", "unknown task types"), ("b=", "unknown")],
)
def test_bad_model_pools_are_settings_errors(value: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        settings(model_pools=value)


POOLS = [ModelPool("turbo", NO_STEMS, default=True), ModelPool("base", ALL), ModelPool("sft", ALL)]


def test_requests_go_to_the_named_pool_or_the_default_and_stem_tasks_reach_a_base_pool() -> None:
    assert choose_pool(POOLS, None, TaskType.TEXT2MUSIC).name == "turbo"
    assert choose_pool(POOLS, "sft", TaskType.TEXT2MUSIC).name == "sft"
    assert choose_pool(POOLS, None, TaskType.EXTRACT).name == "base"
    assert choose_pool(POOLS, "sft", TaskType.LEGO).name == "sft"


def test_an_unserved_model_or_an_impossible_task_is_refused_with_what_is_available() -> None:
    with pytest.raises(FieldError) as unknown:
        choose_pool(POOLS, "xl", TaskType.TEXT2MUSIC)
    assert unknown.value.detail.startswith("model: no pool serves the model 'xl'; available: 'turbo' (cover, ")
    assert "'base' (complete, cover" in unknown.value.detail
    with pytest.raises(FieldError) as turbo:
        choose_pool(POOLS, "turbo", TaskType.COMPLETE)
    assert turbo.value.detail.startswith(
        "task_type: 'complete' is not available with the model 'turbo' (use model 'base' or 'sft'); models: "
    )
    with pytest.raises(FieldError, match="on this farm \\(no model here does it\\)"):
        choose_pool(POOLS[:1], None, TaskType.EXTRACT)


def test_the_models_list_puts_the_default_first() -> None:
    body = model_list(POOLS)
    assert body.default == "turbo" and [m.name for m in body.models] == ["turbo", "base", "sft"]
    assert body.models[0].default and TaskType.EXTRACT not in body.models[0].task_types
