"""Engine fixtures: tiny random ACE-Step 1.5 checkpoints (built once per session) and engines on them.

Engines load with `DEVICE`/`DTYPE` from the environment (auto: CUDA + bf16 when a GPU is present).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from acefarm.infra.settings import Settings
from gpu_consumer.engine.acestep import AceStepEngine
from gpu_consumer.engine.base import Job
from schemas.generation import GenerationParams


@pytest.fixture(scope="session")
def tiny_turbo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random turbo checkpoint without the audio tokenizer (no stem tasks, no cover-from-source)."""
    from acefarm.model.tiny import make_tiny

    return make_tiny(tmp_path_factory.mktemp("models") / "tiny-turbo", turbo=True, audio_tokenizer=False)


@pytest.fixture(scope="session")
def engine(tiny_model_dir: Path) -> AceStepEngine:
    """One AceStepEngine on the tiny checkpoint, shared by the session (as in a consumer process)."""
    return AceStepEngine(Settings(model_path=tiny_model_dir, _env_file=None))


class Recorder:
    """Collects `job.report` calls."""

    def __init__(self) -> None:
        self.events: list[tuple[str, float, int | None, int | None]] = []

    def __call__(self, stage: Any, progress: float, step: int | None, total: int | None) -> None:
        self.events.append((str(stage), progress, step, total))


def build_job(src: Any = None, reference: Any = None, report: Any = None, cancelled: Any = None, **fields: Any) -> Job:
    """A Job from GenerationParams fields (short, few steps, fixed seed by default)."""
    fields.setdefault("prompt", "lofi piano, rain")
    fields.setdefault("duration", 1.2)
    fields.setdefault("inference_steps", 3)
    fields.setdefault("seed", 7)
    if src is not None:
        fields.setdefault("src_audio_key", "inputs/t-test/src.wav")
    if reference is not None:
        fields.setdefault("reference_audio_key", "inputs/t-test/ref.wav")
    job = Job(task_id="t-test", params=GenerationParams(**fields), src_audio=src, reference_audio=reference)
    if report is not None:
        job.report = report
    if cancelled is not None:
        job.is_cancelled = cancelled
    return job


@pytest.fixture
def make_job() -> Callable[..., Job]:
    """`build_job` as a fixture."""
    return build_job
