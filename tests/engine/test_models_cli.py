"""`acefarm models make-tiny` and `acefarm models info` (download needs the network: not tested here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from acefarm.devtools.models_cli import models_app


def test_make_tiny_writes_a_small_loadable_checkpoint(tmp_path: Path) -> None:
    result = CliRunner().invoke(models_app, ["make-tiny", str(tmp_path / "t"), "--turbo"])
    assert result.exit_code == 0, result.output
    assert "noise" in result.output
    lm = tmp_path / "t" / "lm"
    files = [p for p in (tmp_path / "t").rglob("*") if p.is_file() and lm not in p.parents]
    assert sum(p.stat().st_size for p in files) < 5 * 1024 * 1024
    lm_files = [p for p in lm.rglob("*") if p.is_file()]  # the tiny 5 Hz LM: 64 000 code tokens dominate
    assert (lm / "model.safetensors").is_file() and sum(p.stat().st_size for p in lm_files) < 16 * 1024 * 1024
    record = json.loads((tmp_path / "t" / "acefarm.json").read_text())
    assert "extract" in record["unsupported"] and "text2music" in record["supported_tasks"]


def test_info_prints_what_is_loaded_where(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_PATH", str(tiny_model_dir))
    result = CliRunner().invoke(models_app, ["info"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["source"] == str(tiny_model_dir) and shown["loaded"]["device"] in ("cpu", "cuda")
    assert shown["loaded"]["components"]["vae"] == "AutoencoderOobleck"


def test_info_explains_a_missing_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_PATH", str(tmp_path))
    result = CliRunner().invoke(models_app, ["info"])
    assert result.exit_code == 1 and "make-tiny" in result.output
