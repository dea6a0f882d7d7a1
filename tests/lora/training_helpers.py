"""Run a training job in-process on the tiny pipeline and store the result like the trainer does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from acefarm.model.datasets import DatasetLimits
from acefarm.model.loras import new_lora_id
from schemas.events import TrainingRequested
from schemas.training import TrainingOptions
from trainer.lora_training import TrainingHooks
from trainer.run import TrainingOutput, run_training

FAST = TrainingOptions(rank=4, steps=6, warmup_steps=2, learning_rate=5e-3, clip_seconds=5, checkpoint_every=3)


def train(
    pipe: Any, zip_path: Path, work: Path, limits: DatasetLimits, options: TrainingOptions = FAST, **kwargs: Any
) -> tuple[TrainingRequested, TrainingOutput]:
    """Train on the CPU; returns the request and the output (adapter under work/adapter)."""
    request = TrainingRequested(
        task_id=f"t-{new_lora_id('x')}",
        lora_id=new_lora_id("tones"),
        style_name="tones",
        dataset_key="datasets/x.zip",
        options=options,
    )
    hooks = kwargs.pop("hooks", TrainingHooks())
    report = kwargs.pop("report", lambda r: None)
    output = run_training(
        pipe, torch.device("cpu"), request, zip_path, work, limits=limits, hooks=hooks, report=report, **kwargs
    )
    return request, output
