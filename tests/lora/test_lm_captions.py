"""Training captions from the tiny 5 Hz LM: clips without metadata are captioned by its understand step
(through the tiny pipeline's own VAE and audio tokenizer), the dataset's values win, `off` changes nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Literal

import pytest

from acefarm.infra.settings import Settings
from acefarm.infra.storage import LocalStorage
from acefarm.model.datasets import DatasetLimits
from acefarm.model.lm.fields import BPM_RANGE, KEYS
from acefarm.model.lm.tiny import make_tiny_lm
from schemas.storage_keys import manifest_key
from schemas.training import LoraManifest, TrackInfo
from tests.lora.training_helpers import FAST, train
from tests.lora.zips import tone, write_zip
from trainer.lm_captions import CaptionLm, LmUnavailable
from trainer.lora_training import TrainingCancelled, TrainingHooks
from trainer.results import store_lora

FEW_STEPS = FAST.model_copy(update={"steps": 2, "warmup_steps": 1, "trigger_tag": "tonez"})


@pytest.fixture(scope="module")
def tiny_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random 5 Hz LM, saved like `acefarm models make-tiny` writes DIR/lm."""
    return make_tiny_lm(tmp_path_factory.mktemp("tiny-lm") / "lm")


def captions(tiny_lm_dir: Path, tiny_pipe: Any, mode: Literal["auto", "on", "off"] = "auto") -> CaptionLm | None:
    configured = Settings(lm_model_path=tiny_lm_dir, trainer_lm_captions=mode)
    return CaptionLm.configured(configured, "cpu", tiny_pipe)


@pytest.fixture(scope="module")
def caption_lm(tiny_lm_dir: Path, tiny_pipe: Any) -> CaptionLm:
    """One captioning LM for the module, as a trainer process keeps one (loaded on first use)."""
    lm = captions(tiny_lm_dir, tiny_pipe)
    assert lm is not None
    return lm


def assert_from_the_lm(track: TrackInfo) -> None:
    assert track.clips, track
    for clip in track.clips:
        assert clip.caption_source == "lm"
        assert clip.caption.startswith("tonez, ") and clip.caption.removeprefix("tonez, ").strip()
        assert clip.bpm is not None and BPM_RANGE[0] <= clip.bpm <= BPM_RANGE[1]
        assert clip.key in KEYS


def test_a_dataset_without_metadata_trains_on_lm_captions_shown_in_the_manifest(
    tiny_pipe: Any, caption_lm: CaptionLm, tmp_path: Path, limits: DatasetLimits
) -> None:
    zip_path = write_zip(tmp_path / "d.zip", {f"t{i}.wav": tone(3, 220.0 * (i + 1)) for i in range(2)})
    request, output = train(tiny_pipe, zip_path, tmp_path / "w", limits, FEW_STEPS, captions=caption_lm)
    assert output.result.steps == 2
    storage = LocalStorage(tmp_path / "data")
    asyncio.run(store_lora(storage, request, output, base_model="tiny", base_revision=None))
    manifest = LoraManifest.model_validate_json((tmp_path / "data" / manifest_key(request.lora_id)).read_text())
    for track in manifest.tracks:
        assert track.caption is None and track.bpm is None  # the dataset said nothing
        assert_from_the_lm(track)
    _, again = train(tiny_pipe, zip_path, tmp_path / "w2", limits, FEW_STEPS, captions=caption_lm)
    assert again.tracks == output.tracks, "a redelivered job gets the same captions"


def test_the_datasets_captions_bpm_and_key_win_over_the_lm(
    tiny_pipe: Any, caption_lm: CaptionLm, tmp_path: Path, limits: DatasetLimits
) -> None:
    files = {f"t{i}.wav": tone(3, 220.0 * (i + 1)) for i in range(3)}
    files["t0.txt"] = b"[verse]\nla la la\n"
    files["metadata.csv"] = b"file,caption,bpm,key\nt1.wav,pure sine tone,120,A minor\nt2.wav,soft hum,,\n"
    zip_path = write_zip(tmp_path / "d.zip", files)
    _, output = train(tiny_pipe, zip_path, tmp_path / "w", limits, FEW_STEPS, captions=caption_lm)
    lyrics_only, described, caption_only = output.tracks
    assert_from_the_lm(lyrics_only)
    assert lyrics_only.lyrics == "[verse]\nla la la"
    [clip] = described.clips
    assert (clip.caption, clip.caption_source, clip.bpm, clip.key) == (
        "tonez, pure sine tone",
        "metadata",
        120,
        "A minor",
    )
    [clip] = caption_only.clips
    assert (clip.caption, clip.caption_source) == ("tonez, soft hum", "metadata")
    assert clip.bpm is not None and BPM_RANGE[0] <= clip.bpm <= BPM_RANGE[1] and clip.key in KEYS


def test_off_or_no_lm_keeps_the_dataset_captions(tiny_pipe: Any, tiny_lm_dir: Path, tmp_path: Path) -> None:
    assert captions(tiny_lm_dir, tiny_pipe, "off") is None
    nothing_cached = Settings(trainer_lm_captions="auto", hf_home=tmp_path / "hf")
    assert CaptionLm.configured(nothing_cached, "cpu", tiny_pipe) is None


def test_off_trains_on_metadata_and_style_name(tiny_pipe: Any, tmp_path: Path, limits: DatasetLimits) -> None:
    files = {f"t{i}.wav": tone(3, 220.0 * (i + 1)) for i in range(2)}
    files["metadata.csv"] = b"file,caption\nt1.wav,pure sine tone\n"
    _, output = train(tiny_pipe, write_zip(tmp_path / "d.zip", files), tmp_path / "w", limits, FEW_STEPS)
    shown = [(c.caption, c.caption_source, c.bpm, c.key) for t in output.tracks for c in t.clips]
    assert shown == [("tonez, tones", "style name", None, None), ("tonez, pure sine tone", "metadata", None, None)]


def test_an_unloadable_lm_fails_the_job_when_on_and_is_skipped_when_auto(
    tiny_pipe: Any, tmp_path: Path, limits: DatasetLimits
) -> None:
    zip_path = write_zip(tmp_path / "d.zip", {f"t{i}.wav": tone(3, 220.0 * (i + 1)) for i in range(2)})
    missing = tmp_path / "no-lm"
    with pytest.raises(LmUnavailable, match="cannot be loaded"):
        train(tiny_pipe, zip_path, tmp_path / "a", limits, FEW_STEPS, captions=captions(missing, tiny_pipe, "on"))
    _, output = train(tiny_pipe, zip_path, tmp_path / "b", limits, FEW_STEPS, captions=captions(missing, tiny_pipe))
    assert {c.caption_source for t in output.tracks for c in t.clips} == {"style name"}


def test_cancel_stops_captioning(tiny_pipe: Any, caption_lm: CaptionLm, tmp_path: Path, limits: DatasetLimits) -> None:
    zip_path = write_zip(tmp_path / "d.zip", {f"t{i}.wav": tone(3, 220.0 * (i + 1)) for i in range(2)})
    reports: list[str] = []
    hooks = TrainingHooks(is_cancelled=lambda: any("captioning" in r for r in reports))
    with pytest.raises(TrainingCancelled):
        train(
            tiny_pipe,
            zip_path,
            tmp_path / "w",
            limits,
            FEW_STEPS,
            captions=caption_lm,
            hooks=hooks,
            report=lambda r: reports.append(r.message or ""),
        )
    assert reports[-1] == "captioning t0.wav at 0 s", "cancelled while the LM captioned the first clip"
