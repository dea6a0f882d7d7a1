"""LoRA hooks of AceStepEngine: a random adapter saved in diffusers' LoRA format, loaded and switched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from acefarm.infra.settings import Settings
from gpu_consumer.engine.acestep import AceStepEngine
from gpu_consumer.engine.base import InvalidInput
from tests.engine.conftest import build_job


def _random_adapter(model_dir: Path, out: Path, seed: int) -> Path:
    import torch
    from diffusers import AceStepPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    pipe = AceStepPipeline.from_pretrained(model_dir, local_files_only=True)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False)
    pipe.transformer.add_adapter(config, adapter_name="a")
    AceStepPipeline.save_lora_weights(
        out,
        transformer_lora_layers=get_peft_model_state_dict(pipe.transformer, adapter_name="a"),
        transformer_lora_adapter_metadata=pipe.transformer.peft_config["a"].to_dict(),
    )
    return out


def test_lora_is_applied_scaled_switched_and_base_jobs_stay_base(tiny_model_dir: Path, tmp_path: Path) -> None:
    engine = AceStepEngine(Settings(model_path=tiny_model_dir, _env_file=None), max_adapters=1)
    base = engine.generate(build_job(duration=1.0))[0].audio
    first = _random_adapter(tiny_model_dir, tmp_path / "first", 1)
    engine.ensure_adapter("first", first)
    styled = engine.generate(build_job(duration=1.0, lora_id="first"))[0].audio
    half = engine.generate(build_job(duration=1.0, lora_id="first", lora_scale=0.5))[0].audio
    assert not np.allclose(base, styled) and not np.allclose(styled, half)
    assert np.array_equal(engine.generate(build_job(duration=1.0))[0].audio, base)
    assert np.array_equal(engine.generate(build_job(duration=1.0, lora_id="first", lora_scale=0.0))[0].audio, base)

    second = _random_adapter(tiny_model_dir, tmp_path / "second", 2)
    engine.adapter_resolver = lambda lora_id, storage: {"second": second}.get(lora_id)
    other = engine.generate(build_job(duration=1.0, lora_id="second"))[0].audio
    assert engine.adapters == ["second"]  # bounded: the least recently used one was dropped
    assert not np.allclose(other, styled) and not np.allclose(other, base)
    assert np.array_equal(engine.generate(build_job(duration=1.0))[0].audio, base)
    with pytest.raises(InvalidInput, match="'missing' is not available"):
        engine.generate(build_job(lora_id="missing"))
    assert engine.drop_adapter("second") and engine.adapters == []


def test_several_loras_blend_and_all_scales_zero_is_the_base(tiny_model_dir: Path, tmp_path: Path) -> None:
    paths = {name: _random_adapter(tiny_model_dir, tmp_path / name, seed) for name, seed in (("a", 3), ("b", 4))}
    engine = AceStepEngine(Settings(model_path=tiny_model_dir, _env_file=None), max_adapters=1)
    engine.adapter_resolver = lambda lora_id, storage: paths.get(lora_id)
    base = engine.generate(build_job(duration=1.0))[0].audio
    only_a = engine.generate(build_job(duration=1.0, lora_id="a"))[0].audio
    blend = [{"lora_id": "a", "scale": 1.0}, {"lora_id": "b", "scale": 0.7}]
    both = engine.generate(build_job(duration=1.0, loras=blend))[0].audio
    assert not np.allclose(both, only_a) and not np.allclose(both, base)
    assert sorted(engine.adapters) == ["a", "b"], "a blend keeps every adapter it needs, even past max_adapters"
    zeros = [{"lora_id": "a", "scale": 0.0}, {"lora_id": "b", "scale": 0.0}]
    assert np.array_equal(engine.generate(build_job(duration=1.0, loras=zeros))[0].audio, base)
    a_alone = [{"lora_id": "a", "scale": 1.0}, {"lora_id": "b", "scale": 0.0}]
    assert np.array_equal(engine.generate(build_job(duration=1.0, loras=a_alone))[0].audio, only_a)
    assert np.array_equal(engine.generate(build_job(duration=1.0, loras=blend))[0].audio, both)
    assert np.array_equal(engine.generate(build_job(duration=1.0))[0].audio, base)
