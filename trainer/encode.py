"""Encode training clips once with the pipeline's own frozen parts: VAE latents and DiT conditions.

Mirrors what `AceStepPipeline.__call__` feeds the DiT for text2music: the caption/lyrics through
`encode_prompt`, the condition encoder with the silence latent as timbre reference, and context
latents made of the silence latent plus an all-ones chunk mask (generate everywhere).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from trainer.clips import Clip

TIMBRE_REFERENCE_SECONDS = 30
"""The condition encoder's timbre input is always a 30 s window (the pipeline's convention)."""


@dataclass
class EncodedClip:
    """Cached tensors for one clip, kept on the CPU between steps."""

    target: torch.Tensor
    """Clean latents x0, [1, frames, latent_dim]."""
    encoder_hidden_states: torch.Tensor
    """Conditions from the condition encoder, [1, tokens, hidden]."""
    context_latents: torch.Tensor
    """Silence latents + chunk mask, [1, frames, 2 * latent_dim]."""


@torch.no_grad()
def encode_clips(
    pipe: Any,
    clips: list[Clip],
    *,
    device: torch.device,
    dtype: torch.dtype,
    generator: torch.Generator,
    on_clip: Callable[[int, int], None] | None = None,
) -> list[EncodedClip]:
    """Encode every clip (no gradients); `on_clip(done, total)` reports progress."""
    encoded = []
    for index, clip in enumerate(clips):
        encoded.append(encode_clip(pipe, clip, device=device, dtype=dtype, generator=generator))
        if on_clip is not None:
            on_clip(index + 1, len(clips))
    return encoded


@torch.no_grad()
def encode_clip(
    pipe: Any, clip: Clip, *, device: torch.device, dtype: torch.dtype, generator: torch.Generator
) -> EncodedClip:
    """Latents and conditions of one clip, as the pipeline would build them for text2music."""
    audio = torch.from_numpy(clip.audio).unsqueeze(0).to(device=device, dtype=pipe.vae.dtype)
    posterior = pipe.vae.encode(audio).latent_dist
    noise = torch.randn(posterior.mean.shape, generator=generator, dtype=torch.float32).to(posterior.mean)
    target = (posterior.mean + posterior.std * noise).transpose(1, 2).to(dtype)
    frames = target.shape[1]
    note = clip.annotation
    text, text_mask, lyrics, lyrics_mask = pipe.encode_prompt(
        prompt=[note.caption],
        lyrics=[note.lyrics],
        device=device,
        audio_duration=clip.duration_s,
        bpm=note.bpm,
        keyscale=note.key,
    )
    silence = pipe.condition_encoder.silence_latent.to(device=device, dtype=dtype)
    timbre = silence[:, : math.ceil(TIMBRE_REFERENCE_SECONDS * pipe.latents_per_second), :]
    conditions, _ = pipe.condition_encoder(
        text_hidden_states=text,
        text_attention_mask=text_mask,
        lyric_hidden_states=lyrics,
        lyric_attention_mask=lyrics_mask,
        refer_audio_acoustic_hidden_states_packed=timbre,
        refer_audio_order_mask=torch.zeros(1, device=device, dtype=torch.long),
    )
    source, _ = pipe.prepare_src_latents(device=device, dtype=dtype, batch_size=1, latent_length=frames)
    context = torch.cat([source, torch.ones_like(source)], dim=-1)
    return EncodedClip(target.cpu(), conditions.to(dtype).cpu(), context.cpu())
