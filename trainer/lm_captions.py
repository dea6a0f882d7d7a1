"""Training captions from ACE-Step's 5 Hz LM: its understand step describes clips the dataset leaves undescribed.

`TRAINER_LM_CAPTIONS` decides: `off` never, `on` always, `auto` when an LM is at hand without a download
(`LM_MODEL_PATH`, or `LM_MODEL_ID` in the Hub cache). The LM is loaded once per process, on the
trainer's device, the first time a clip needs it. Clips are turned into audio codes by the training
pipeline's own VAE and audio tokenizer; what the dataset's metadata gives (caption, bpm, key) is kept
and forced into the LM's `<think>` block, the LM decides the rest. Lyrics come only from the dataset.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from acefarm.infra.logging import get_logger
from acefarm.infra.settings import Settings
from acefarm.model.datasets import DatasetTrack
from acefarm.model.lm.audio_codes import NoAudioTokenizer, audio_codes
from acefarm.model.lm.decode import DecodeCancelled, Hooks, Sampling
from acefarm.model.lm.loading import lm_available, load_lm
from acefarm.model.lm.planner import FiveHzLm
from acefarm.model.lm.protocol import Metas
from acefarm.runtime.progress import Report
from schemas.status import Stage
from trainer.annotate import Annotation, SidecarAnnotator
from trainer.lora_training import TrainingCancelled, TrainingHooks, TrainingInterrupted

log = get_logger(__name__)


class LmUnavailable(RuntimeError):
    """`TRAINER_LM_CAPTIONS=on` but the LM could not be loaded."""


class CaptionLm:
    """The captioning LM of one trainer process, loaded on first `get()`; `required`: load errors are raised."""

    def __init__(self, settings: Settings, device: str, *, required: bool) -> None:
        self._settings = settings.model_copy(update={"lm_device": device})
        self._required = required
        self._lm: FiveHzLm | None = None
        self._failed = False
        self._lock = threading.Lock()

    @classmethod
    def configured(cls, settings: Settings, device: str, pipe: Any) -> CaptionLm | None:
        """The captioning LM `TRAINER_LM_CAPTIONS` asks for (not loaded yet), or None: captions from the dataset."""
        mode = settings.trainer_lm_captions
        if mode == "off":
            return None
        if mode == "auto" and not lm_available(settings):
            log.info("trainer.lm_captions_off", reason="no LM_MODEL_PATH and LM_MODEL_ID is not cached")
            return None
        if mode == "auto" and getattr(pipe, "audio_tokenizer", None) is None:
            log.warning("trainer.lm_captions_off", reason="the DiT checkpoint has no audio tokenizer")
            return None
        return cls(settings, device, required=mode == "on")

    def get(self) -> FiveHzLm | None:
        """The LM (loaded now if not yet); None when it could not be loaded and is not required."""
        with self._lock:
            if self._lm is None and not self._failed:
                try:
                    self._lm, info = load_lm(self._settings)
                except (OSError, ValueError) as error:
                    if self._required:
                        raise LmUnavailable(f"the 5 Hz LM for training captions cannot be loaded: {error}") from error
                    self._failed = True
                    log.warning("trainer.lm_unavailable", error=str(error)[:300])
                    return None
                log.info("trainer.lm_loaded", source=info.source, device=info.device, seconds=info.load_s)
            return self._lm


class LmAnnotator:
    """The dataset's values where it has them; the LM's understand step fills in caption, bpm and key.

    A track whose metadata gives all three is not shown to the LM. Draws are seeded from `seed` in clip
    order, so a redelivered job gets the same captions.
    """

    def __init__(
        self,
        lm: CaptionLm,
        pipe: Any,
        dataset: SidecarAnnotator,
        *,
        seed: int,
        hooks: TrainingHooks,
        report: Callable[[Report], None] = lambda report: None,
    ) -> None:
        self._lm = lm
        self._pipe = pipe
        self._dataset = dataset
        self._seed = seed
        self._hooks = hooks
        self._report = report
        self._calls = 0

    def annotate(self, track: DatasetTrack, clip: np.ndarray, start_s: float) -> Annotation:
        """The dataset's annotation, completed by the LM when the track's metadata lacks caption, bpm or key."""
        known = self._dataset.annotate(track, clip, start_s)
        if track.caption and track.bpm is not None and track.key:
            return known
        if self._pipe.audio_tokenizer is None:
            raise NoAudioTokenizer("the DiT checkpoint has no audio tokenizer: the LM cannot hear training clips")
        model = self._lm.get()
        if model is None:
            return known
        self._report(Report(Stage.PREPARING, 0.0, message=f"captioning {track.name} at {start_s:.0f} s"))
        metas = self._understand(model, audio_codes(self._pipe.vae, self._pipe.audio_tokenizer, clip), track)
        if known.source == "metadata" or not metas.caption:
            caption, source = known.caption, known.source
        else:
            caption, source = self._dataset.tagged(metas.caption), "lm"
        return Annotation(caption=caption, lyrics=known.lyrics, bpm=metas.bpm, key=metas.keyscale, source=source)

    def _understand(self, model: FiveHzLm, codes: str, track: DatasetTrack) -> Metas:
        """The `<think>` block for `codes`, with the track's known values forced (no lyrics)."""
        hooks = Hooks(cancelled=lambda: self._hooks.is_cancelled() or self._hooks.should_stop())
        given = Metas(caption=track.caption, bpm=track.bpm, keyscale=track.key)
        sampling = Sampling(seed=self._seed + self._calls)
        self._calls += 1
        try:
            return model.understand(codes, sampling, hooks, given=given, lyrics=False).metas
        except DecodeCancelled:
            raise (TrainingCancelled if self._hooks.is_cancelled() else TrainingInterrupted) from None
