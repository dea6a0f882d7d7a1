"""Training on the tiny checkpoint through the real pipeline, PEFT and diffusers' LoRA format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from safetensors import safe_open

from acefarm.model.datasets import DatasetLimits
from tests.lora.training_helpers import FAST, train
from tests.lora.zips import tone_dataset
from trainer.lora_training import Checkpoint, TrainingCancelled, TrainingHooks, turbo_timesteps


def test_turbo_schedule_matches_ace_step() -> None:
    expected = [1.0, 0.9545, 0.9, 0.8333, 0.75, 0.6429, 0.5, 0.3]
    assert [round(t, 4) for t in turbo_timesteps()] == expected


def test_train_writes_a_diffusers_adapter_with_alpha(tiny_pipe: Any, tmp_path: Path, limits: DatasetLimits) -> None:
    zip_path = tone_dataset(tmp_path / "d.zip")
    _, output = train(tiny_pipe, zip_path, tmp_path / "work", limits)
    assert output.result.steps == FAST.steps
    assert output.result.final_loss > 0
    assert [t.name for t in output.tracks] == ["tones/tone0.wav", "tones/tone1.wav", "tones/tone2.wav"]
    assert output.tracks[0].lyrics and output.tracks[1].caption == "pure sine tone"
    weights = output.adapter_dir / "pytorch_lora_weights.safetensors"
    with safe_open(str(weights), "pt") as f:
        keys = list(f.keys())
        metadata = f.metadata()
    assert keys and all(k.startswith("transformer.") for k in keys)
    assert any(".to_q." in k for k in keys) and any(".to_out.0." in k for k in keys)
    config = json.loads(metadata["lora_adapter_metadata"])
    assert config["transformer.r"] == FAST.rank and config["transformer.lora_alpha"] == 2 * FAST.rank
    assert not getattr(tiny_pipe.transformer, "peft_config", {}), "the training adapter was left attached"


def test_checkpoint_resume_reaches_the_same_result(tiny_pipe: Any, tmp_path: Path, limits: DatasetLimits) -> None:
    zip_path = tone_dataset(tmp_path / "d.zip")
    saved: list[Checkpoint] = []
    _, straight = train(tiny_pipe, zip_path, tmp_path / "a", limits, hooks=TrainingHooks(save_checkpoint=saved.append))
    assert [c.step for c in saved] == [3]
    restored = Checkpoint.from_bytes(saved[0].to_bytes())
    _, resumed = train(tiny_pipe, zip_path, tmp_path / "b", limits, resume=restored)
    assert resumed.result.resumed_from == 3
    assert resumed.result.final_loss == pytest.approx(straight.result.final_loss, rel=1e-4)


def test_cancel_stops_at_the_next_step(tiny_pipe: Any, tmp_path: Path, limits: DatasetLimits) -> None:
    steps: list[int] = []
    hooks = TrainingHooks(report=lambda step, total, loss: steps.append(step), is_cancelled=lambda: len(steps) >= 2)
    with pytest.raises(TrainingCancelled):
        train(tiny_pipe, tone_dataset(tmp_path / "d.zip"), tmp_path / "w", limits, hooks=hooks)
    assert steps == [1, 2]
    assert not getattr(tiny_pipe.transformer, "peft_config", {})
