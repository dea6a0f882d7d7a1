"""Fixtures for the LoRA tests: a tiny ACE-Step checkpoint, dataset limits for short tones, settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from acefarm.model.datasets import DatasetLimits

TEST_LIMITS_ENV = {
    "LORA_MIN_TRACKS": "2",
    "LORA_MAX_TRACKS": "4",
    "LORA_MIN_TRACK_SECONDS": "1",
    "LORA_MAX_TRACK_SECONDS": "8",
}
"""The dataset limits the LoRA tests run under (short tones, few tracks)."""


@pytest.fixture(scope="session")
def limits() -> DatasetLimits:
    """`DatasetLimits` matching `TEST_LIMITS_ENV`."""
    return DatasetLimits(min_tracks=2, max_tracks=4, min_track_seconds=1.0, max_track_seconds=8.0)


@pytest.fixture(scope="session")
def tiny_pipe(tiny_model_dir: Path) -> Any:
    """The tiny pipeline loaded on the CPU (shared by the in-process tests; adapters are removed after use)."""
    from acefarm.infra.settings import Settings
    from acefarm.model.pipeline import load_pipeline

    pipe, _ = load_pipeline(Settings(model_path=tiny_model_dir, device="cpu", vae_tiling=False))
    return pipe
