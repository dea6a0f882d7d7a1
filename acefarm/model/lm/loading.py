"""Load the 5 Hz LM once, as the settings say: `LM_MODEL_PATH` (local, offline) else the Hub's `LM_MODEL_ID`
at `LM_MODEL_REVISION` (safetensors only), on `LM_DEVICE` (default: `DEVICE`) with `DTYPE`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from acefarm.infra.settings import Settings
from acefarm.model.lm.decode import LmBackend
from acefarm.model.lm.planner import FiveHzLm
from acefarm.model.pipeline import hub_cache_dir, resolve_device, resolve_dtype


@dataclass(frozen=True)
class LmInfo:
    """What LM was loaded from where onto which device, and how long it took."""

    source: str
    local: bool
    revision: str | None
    device: str
    dtype: str
    backend: str
    load_s: float


def lm_source(settings: Settings) -> tuple[str, bool]:
    """(path or Hub id, is_local): `LM_MODEL_PATH` wins over `LM_MODEL_ID`."""
    if settings.lm_model_path is not None:
        return str(settings.lm_model_path), True
    return settings.lm_model_id, False


def lm_available(settings: Settings) -> bool:
    """Whether an LM is configured without downloading: `LM_MODEL_PATH` set, or `LM_MODEL_ID` (at
    `LM_MODEL_REVISION`) already in the Hub cache."""
    if settings.lm_model_path is not None:
        return True
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(
            settings.lm_model_id,
            "config.json",
            cache_dir=hub_cache_dir(settings),
            revision=settings.lm_model_revision,
        )
    except Exception:  # pragma: no cover - any cache trouble means "not cached"
        return False
    return isinstance(found, str)


def load_lm(settings: Settings) -> tuple[FiveHzLm, LmInfo]:
    """Load the LM and its tokenizer on their device; `FileNotFoundError`/`OSError` when they cannot be found."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from acefarm.model.lm.hf_backend import TransformersBackend

    started = time.perf_counter()
    source, local = lm_source(settings)
    device = resolve_device(settings.lm_device or settings.device)
    dtype = resolve_dtype(settings.dtype, device)
    if local and not (Path(source) / "config.json").is_file():
        raise FileNotFoundError(
            f"LM_MODEL_PATH={source} is not a transformers model directory (no config.json); "
            "run `acefarm models download` or `acefarm models make-tiny DIR` (which also writes DIR/lm)"
        )
    options: dict[str, Any] = {"local_files_only": True} if local else _hub_options(settings)
    tokenizer = AutoTokenizer.from_pretrained(source, **options)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, use_safetensors=True, **options)
    cast(Any, model).to(device)
    backend: LmBackend = TransformersBackend(model, tokenizer, device)
    info = LmInfo(
        source=source,
        local=local,
        revision=None if local else settings.lm_model_revision,
        device=device,
        dtype=str(dtype).removeprefix("torch."),
        backend=backend.name,
        load_s=round(time.perf_counter() - started, 3),
    )
    return FiveHzLm(backend, lyrics_max_tokens=settings.lm_lyrics_max_tokens), info


def _hub_options(settings: Settings) -> dict[str, Any]:
    token = settings.hf_token.get_secret_value() if settings.hf_token else None
    return {"revision": settings.lm_model_revision, "token": token, "cache_dir": hub_cache_dir(settings)}
