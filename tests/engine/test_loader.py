"""load_engine: ENGINE=acestep | null | module.path:factory; and the NullEngine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from acefarm.infra.settings import Settings
from gpu_consumer.engine.acestep import AceStepEngine
from gpu_consumer.engine.base import JobCancelled
from gpu_consumer.engine.loader import load_engine
from gpu_consumer.engine.null import NullEngine
from tests.engine.conftest import Recorder, build_job


def _settings(**fields: Any) -> Settings:
    return Settings(_env_file=None, **fields)


def test_null_engine_is_instant_and_reports_progress() -> None:
    engine = load_engine(_settings(engine="null"))
    assert isinstance(engine, NullEngine)
    recorder = Recorder()
    takes = engine.generate(build_job(duration=2.5, batch_size=3, inference_steps=4, report=recorder))
    assert len(takes) == 3 and all(t.audio.shape == (2, 120_000) and t.sample_rate == 48_000 for t in takes)
    assert 0 < np.abs(takes[0].audio).max() < 0.1
    assert [e[0] for e in recorder.events] == ["encoding"] + ["diffusion"] * 4 + ["decoding"]
    with pytest.raises(JobCancelled):
        engine.generate(build_job(cancelled=lambda: True))


def test_a_dotted_factory_receives_the_settings() -> None:
    engine = load_engine(_settings(engine="tests.support.tone_engine:ToneEngine"))
    assert engine.name == "tone"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("nonsense", "expected 'acestep', 'null'"),
        ("no.such.module:make", "cannot be imported"),
        ("gpu_consumer.engine.null:Missing", "cannot be imported"),
    ],
)
def test_unknown_engines_are_explained(name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_engine(_settings(engine=name))


def test_acestep_is_the_default_and_loads_model_path(tiny_model_dir: Path) -> None:
    settings = _settings(model_path=tiny_model_dir)
    assert settings.engine == "acestep"
    engine = load_engine(settings)
    assert isinstance(engine, AceStepEngine) and engine.sample_rate == 48_000


def test_a_model_path_without_a_checkpoint_is_explained(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="make-tiny"):
        load_engine(_settings(model_path=tmp_path))
