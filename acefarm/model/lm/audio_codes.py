"""Audio → 5 Hz audio codes with the DiT checkpoint's own VAE and audio tokenizer (for `understand`).

Only the two components are loaded (subfolders `vae` and `audio_tokenizer` of `MODEL_PATH`/`MODEL_ID`),
once, on first use. A checkpoint without an audio tokenizer cannot turn audio into codes:
`NoAudioTokenizer` says so.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from acefarm.infra.settings import Settings
from acefarm.model.lm.protocol import code_token
from acefarm.model.pipeline import hub_cache_dir, model_source, resolve_device, resolve_dtype


class NoAudioTokenizer(RuntimeError):
    """The configured DiT checkpoint has no audio tokenizer, so audio cannot become codes."""


class AudioCoder:
    """Encodes float32 [2, samples] 48 kHz audio to a string of `<|audio_code_N|>` tokens."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._parts: tuple[Any, Any] | None = None
        self._lock = threading.Lock()

    def _load(self) -> tuple[Any, Any]:
        with self._lock:
            if self._parts is None:
                self._parts = _load_parts(self._settings)
            return self._parts

    def encode(self, audio: np.ndarray) -> str:
        """The audio's codes, five per second (blocking; loads the VAE and tokenizer on first call)."""
        vae, tokenizer = self._load()
        return audio_codes(vae, tokenizer, audio)


def audio_codes(vae: Any, tokenizer: Any, audio: np.ndarray) -> str:
    """float32 [2, samples] 48 kHz audio as `<|audio_code_N|>` tokens, five per second, through an already
    loaded VAE (`AutoencoderOobleck`) and `AceStepAudioTokenizer` (e.g. a loaded pipeline's own)."""
    import torch

    with torch.inference_mode():
        wave = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None].to(vae.device, vae.dtype)
        latents = vae.encode(wave).latent_dist.mode().transpose(1, 2)
        _, indices = tokenizer.tokenize(latents.to(tokenizer.dtype))
    return "".join(code_token(int(i)) for i in indices[0, :, 0].tolist())


def _load_parts(settings: Settings) -> tuple[Any, Any]:
    from diffusers import AutoencoderOobleck
    from diffusers.pipelines.ace_step.modeling_ace_step import AceStepAudioTokenizer

    source, local = model_source(settings)
    if local and not (Path(source) / "audio_tokenizer").is_dir():
        raise NoAudioTokenizer(f"the DiT checkpoint at {source} has no audio_tokenizer: audio cannot become codes")
    device = resolve_device(settings.lm_device or settings.device)
    dtype = resolve_dtype(settings.dtype, device)
    options: dict[str, Any] = (
        {"local_files_only": True}
        if local
        else {
            "revision": settings.model_revision,
            "token": settings.hf_token.get_secret_value() if settings.hf_token else None,
            "cache_dir": hub_cache_dir(settings),
        }
    )
    vae = AutoencoderOobleck.from_pretrained(source, subfolder="vae", torch_dtype=dtype, **options).to(device)
    try:
        tokenizer = AceStepAudioTokenizer.from_pretrained(
            source, subfolder="audio_tokenizer", torch_dtype=dtype, **options
        )
    except OSError as error:
        raise NoAudioTokenizer(f"the DiT checkpoint {source} has no usable audio_tokenizer: {error}") from error
    return vae.eval(), tokenizer.to(device).eval()
