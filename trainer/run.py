"""One training run, blocking (it runs in the job's worker thread): unpack, clip, encode, train, save."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from acefarm.infra.logging import get_logger
from acefarm.model.datasets import DatasetLimits, extract_dataset
from acefarm.runtime.progress import Report
from schemas.events import TrainingRequested
from schemas.status import Stage
from schemas.training import TrackInfo
from trainer.annotate import Annotator, SidecarAnnotator
from trainer.clips import make_clips
from trainer.encode import encode_clips
from trainer.lm_captions import CaptionLm, LmAnnotator
from trainer.lora_training import Checkpoint, LoraTrainer, TrainingCancelled, TrainingHooks, TrainingResult

log = get_logger(__name__)

ENCODING_SHARE = 0.05
"""Share of the progress bar spent unpacking and encoding before the first step."""


@dataclass
class TrainingOutput:
    """What a finished run leaves behind."""

    result: TrainingResult
    tracks: list[TrackInfo]
    adapter_dir: Path
    clips: int


def run_training(
    pipe: Any,
    device: torch.device,
    request: TrainingRequested,
    zip_path: Path,
    work_dir: Path,
    *,
    limits: DatasetLimits,
    hooks: TrainingHooks,
    report: Callable[[Report], None],
    resume: Checkpoint | None = None,
    captions: CaptionLm | None = None,
) -> TrainingOutput:
    """Train one LoRA from the dataset zip; the adapter is written under `work_dir/adapter`. With `captions`,
    the LM describes the clips the dataset's metadata leaves undescribed (`trainer.lm_captions`).

    Raises `DatasetError`, `TrainingCancelled` or `TrainingInterrupted`.
    """
    options = request.options
    report(Report(Stage.PREPARING, 0.0, message="unpacking and decoding tracks"))
    dataset = extract_dataset(zip_path, work_dir / "dataset", limits)
    sidecars = SidecarAnnotator(request.style_name, options.trigger_tag)
    annotator: Annotator = (
        sidecars
        if captions is None
        else LmAnnotator(captions, pipe, sidecars, seed=options.seed, hooks=hooks, report=report)
    )
    clips = make_clips(dataset.tracks, options.clip_seconds, annotator)
    tracks = [track.info() for track in dataset.tracks]
    by_name = {track.name: track for track in tracks}
    for clip in clips:
        by_name[clip.track].clips.append(clip.annotation.shown(clip.start_s))
    sources = Counter(clip.annotation.source for clip in clips)
    log.info(
        "training.dataset",
        tracks=len(tracks),
        clips=len(clips),
        caption_sources=dict(sources),
        ignored=dataset.ignored[:20],
    )

    def encoded(done: int, total: int) -> None:
        if hooks.is_cancelled():
            raise TrainingCancelled
        report(Report(Stage.ENCODING, ENCODING_SHARE * done / total, message=f"encoding clip {done}/{total}"))

    generator = torch.Generator().manual_seed(options.seed)
    dtype = pipe.transformer.dtype
    cached = encode_clips(pipe, clips, device=device, dtype=dtype, generator=generator, on_clip=encoded)
    del clips
    trainer = LoraTrainer(pipe, options, device)
    trainer.attach()
    try:
        if resume is not None:
            log.info("training.resuming", step=resume.step)
        result = trainer.train(cached, hooks, resume)
        adapter_dir = work_dir / "adapter"
        adapter_dir.mkdir(parents=True, exist_ok=True)
        trainer.save_adapter(adapter_dir)
    finally:
        trainer.detach()
    log.info(
        "training.done",
        steps=result.steps,
        loss=round(result.final_loss, 6),
        resumed_from=result.resumed_from,
        seconds_per_step=result.seconds_per_step,
    )
    return TrainingOutput(result, tracks, adapter_dir, len(cached))
