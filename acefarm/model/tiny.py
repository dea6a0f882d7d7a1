"""A tiny, randomly initialised ACE-Step 1.5 pipeline in diffusers format, for tests and demos.

Built from diffusers' and transformers' own classes with an offline character-level tokenizer; it
loads like the real checkpoint (`AceStepPipeline.from_pretrained(dir)`) but its audio is noise.
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

from acefarm.model.pipeline import CAPABILITIES_FILE, task_support

EOS_TOKEN = "<|endoftext|>"
_SPECIAL_TOKENS = [EOS_TOKEN, "<unk>"]
_HIDDEN = 32  # DiT / condition-encoder width
_TEXT_HIDDEN = 16  # text-encoder width


def _char_tokenizer() -> Any:
    """A character-level `PreTrainedTokenizerFast` (no network, no files) with the pipeline's pad token."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = sorted(set(string.printable))
    vocab = {token: i for i, token in enumerate(_SPECIAL_TOKENS + chars)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.add_special_tokens(_SPECIAL_TOKENS)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=EOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token="<unk>",
        padding_side="right",
        model_max_length=4096,
    )


def _attention_kwargs(hidden: int) -> dict[str, Any]:
    return {
        "hidden_size": hidden,
        "intermediate_size": hidden * 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": hidden // 2,
        "sliding_window": 16,
    }


def build_tiny_pipeline(
    latent_dim: int = 8, seed: int = 0, *, turbo: bool = False, audio_tokenizer: bool = True
) -> Any:
    """Build (in memory) a random `AceStepPipeline` with the real architecture at toy size.

    `turbo` marks the DiT as a guidance-distilled turbo model; `audio_tokenizer` adds the 5 Hz audio
    tokenizer/detokenizer that cover-from-source needs.
    """
    import torch
    from diffusers import AceStepPipeline, AutoencoderOobleck, FlowMatchEulerDiscreteScheduler
    from diffusers.models.transformers.ace_step_transformer import AceStepTransformer1DModel
    from diffusers.pipelines.ace_step.modeling_ace_step import (
        AceStepAudioTokenDetokenizer,
        AceStepAudioTokenizer,
        AceStepConditionEncoder,
    )
    from transformers import Qwen3Config, Qwen3Model

    torch.manual_seed(seed)
    tokenizer = _char_tokenizer()
    text_config = Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=_TEXT_HIDDEN,
        intermediate_size=_TEXT_HIDDEN * 2,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=_TEXT_HIDDEN // 2,
        max_position_embeddings=4096,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    text_encoder = Qwen3Model(text_config)
    vae = AutoencoderOobleck(
        encoder_hidden_size=2 * latent_dim,
        downsampling_ratios=[2, 4, 4, 6, 10],
        channel_multiples=[1, 1, 1, 1, 1],
        decoder_channels=4,
        decoder_input_channels=latent_dim,
        audio_channels=2,
        sampling_rate=48_000,
    )
    attn = _attention_kwargs(_HIDDEN)
    transformer = AceStepTransformer1DModel(
        num_hidden_layers=2,
        in_channels=3 * latent_dim,
        audio_acoustic_hidden_dim=latent_dim,
        patch_size=2,
        encoder_hidden_size=_HIDDEN,
        is_turbo=turbo,
        model_version="turbo" if turbo else "base",
        **attn,
    )
    condition_encoder = AceStepConditionEncoder(
        text_hidden_dim=_TEXT_HIDDEN,
        timbre_hidden_dim=latent_dim,
        num_lyric_encoder_hidden_layers=1,
        num_timbre_encoder_hidden_layers=1,
        **attn,
    )
    extras: dict[str, Any] = {}
    if audio_tokenizer:
        extras["audio_tokenizer"] = AceStepAudioTokenizer(
            audio_acoustic_hidden_dim=latent_dim,
            fsq_dim=_HIDDEN,
            num_attention_pooler_hidden_layers=1,
            **attn,
        )
        extras["audio_token_detokenizer"] = AceStepAudioTokenDetokenizer(
            audio_acoustic_hidden_dim=latent_dim, num_attention_pooler_hidden_layers=1, **attn
        )
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, shift=1.0)
    pipe = AceStepPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
        condition_encoder=condition_encoder,
        scheduler=scheduler,
        **extras,
    )
    _fill_silence_latent(pipe)
    return pipe


def _fill_silence_latent(pipe: Any) -> None:
    """Set the condition encoder's `silence_latent` to the VAE's (deterministic) encoding of silence."""
    import torch

    buffer = pipe.condition_encoder.silence_latent
    frames = buffer.shape[1]
    hop = pipe.vae.hop_length
    chunk = 250  # latent frames per VAE call (10 s), tiled over the buffer
    with torch.no_grad():
        silence = torch.zeros(1, 2, chunk * hop)
        latent = pipe.vae.encode(silence).latent_dist.mode().transpose(1, 2)
    repeats = -(-frames // latent.shape[1])
    buffer.copy_(latent.repeat(1, repeats, 1)[:, :frames, :])


def make_tiny(
    directory: str | Path,
    latent_dim: int = 8,
    seed: int = 0,
    *,
    turbo: bool = False,
    audio_tokenizer: bool = True,
) -> Path:
    """Build a tiny random ACE-Step 1.5 checkpoint and save it under `directory` (diffusers format).

    Also writes `acefarm.json` recording which task types it supports. Returns the directory.
    """
    path = Path(directory)
    pipe = build_tiny_pipeline(latent_dim, seed, turbo=turbo, audio_tokenizer=audio_tokenizer)
    path.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(path)
    record = {"tiny": True, "note": "random weights: the audio is noise", "latent_dim": latent_dim, "seed": seed}
    record.update(task_support(turbo=turbo, audio_tokenizer=audio_tokenizer).to_json())
    (path / CAPABILITIES_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return path
