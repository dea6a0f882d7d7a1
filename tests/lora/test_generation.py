"""Generation with trained LoRAs through the real engine: fetched from storage, applied, switched, disabled."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from acefarm.infra.settings import Settings
from acefarm.infra.storage import LocalStorage
from acefarm.model.datasets import DatasetLimits
from acefarm.model.pipeline import load_pipeline
from acefarm.runtime.portal import BlockingStorage, ThreadPortal
from gpu_consumer.engine.acestep import AceStepEngine
from gpu_consumer.engine.adapter_cache import LoraCache
from gpu_consumer.engine.base import InvalidInput, Job
from schemas.generation import GenerationParams
from tests.lora.training_helpers import FAST, train
from tests.lora.zips import tone, write_zip
from trainer.results import store_lora


@pytest.fixture(scope="module")
def stored(tiny_pipe: Any, tmp_path_factory: pytest.TempPathFactory, limits: DatasetLimits) -> tuple[Path, list[str]]:
    """Two LoRAs trained on different tones, stored as the trainer stores them."""
    root = tmp_path_factory.mktemp("lora-gen")
    storage = LocalStorage(root / "data")
    ids = []
    for index, freq in enumerate((110.0, 880.0)):
        zip_path = write_zip(root / f"d{index}.zip", {f"t{i}.wav": tone(3, freq * (i + 1)) for i in range(2)})
        options = FAST.model_copy(update={"seed": index, "steps": 8})
        request, output = train(tiny_pipe, zip_path, root / f"w{index}", limits, options)
        asyncio.run(store_lora(storage, request, output, base_model="tiny", base_revision=None))
        ids.append(request.lora_id)
    return root, ids


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path, stored: tuple[Path, list[str]]) -> AceStepEngine:
    root, _ = stored
    settings = Settings(model_path=tiny_model_dir, device="cpu", output_dir=root / "data", vae_tiling=False)
    pipe, info = load_pipeline(settings)
    cache = LoraCache(root=root / "cache", max_adapters=2)
    return AceStepEngine.from_pipeline(pipe, info, adapter_resolver=cache.resolve, max_adapters=1)


async def generate(engine: AceStepEngine, root: Path, **fields: Any) -> np.ndarray:
    """Run a job in a worker thread, as the consumer does: adapters come from storage through a portal."""
    params = GenerationParams(prompt="sine tones", duration=1.2, inference_steps=3, seed=11, **fields)
    storage, portal = LocalStorage(root / "data"), ThreadPortal()
    try:
        job = Job(task_id="t-lora", params=params, storage=BlockingStorage(storage, portal))
        takes = await asyncio.to_thread(engine.generate, job)
    finally:
        portal.close()
        await storage.close()
    return takes[0].audio


async def test_lora_changes_the_output_and_scale_zero_is_the_base(engine: AceStepEngine, stored: Any) -> None:
    root, (first, _) = stored
    base = await generate(engine, root)
    styled = await generate(engine, root, lora_id=first)
    assert not np.allclose(base, styled, atol=1e-5)
    assert np.array_equal(await generate(engine, root, lora_id=first, lora_scale=0.0), base)
    assert np.array_equal(await generate(engine, root), base), "a job without lora_id after a LoRA job must be the base"


async def test_switching_adapters_gives_each_adapters_output(engine: AceStepEngine, stored: Any) -> None:
    root, (first, second) = stored
    a = await generate(engine, root, lora_id=first)
    b = await generate(engine, root, lora_id=second)
    assert not np.allclose(a, b, atol=1e-5)
    assert engine.adapters == [second], "max_adapters=1: the least recently used adapter was unloaded"
    np.testing.assert_allclose(await generate(engine, root, lora_id=first), a, atol=1e-6)
    np.testing.assert_allclose(await generate(engine, root, lora_id=second), b, atol=1e-6)


async def test_unknown_lora_is_invalid_input(engine: AceStepEngine, stored: Any) -> None:
    with pytest.raises(InvalidInput, match="not available"):
        await generate(engine, stored[0], lora_id="never-trained-000000")


async def test_two_trained_loras_blend_and_all_scales_zero_is_the_base(engine: AceStepEngine, stored: Any) -> None:
    root, (first, second) = stored
    base = await generate(engine, root)
    alone = await generate(engine, root, lora_id=first)
    blend = await generate(engine, root, loras=[{"lora_id": first}, {"lora_id": second, "scale": 0.5}])
    assert not np.allclose(blend, alone, atol=1e-5) and not np.allclose(blend, base, atol=1e-5)
    zeros = [{"lora_id": first, "scale": 0.0}, {"lora_id": second, "scale": 0.0}]
    assert np.array_equal(await generate(engine, root, loras=zeros), base)
    assert np.array_equal(await generate(engine, root), base)
