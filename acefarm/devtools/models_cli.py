"""`acefarm models ...`: download ACE-Step 1.5 weights, show what would be loaded, build a tiny checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from acefarm.infra.settings import Settings

models_app = typer.Typer(help="Download, inspect or build ACE-Step checkpoints.", no_args_is_help=True)


@models_app.command()
def download(
    model_id: Annotated[str | None, typer.Option(help="Hub repo id (default: MODEL_ID).")] = None,
    revision: Annotated[str | None, typer.Option(help="Branch, tag or commit (default: MODEL_REVISION).")] = None,
    local_dir: Annotated[
        Path | None, typer.Option(help="Copy into this directory (usable as MODEL_PATH) instead of the HF cache.")
    ] = None,
    lm: Annotated[
        bool, typer.Option(help="Fetch the 5 Hz LM (LM_MODEL_ID at LM_MODEL_REVISION, safetensors) instead.")
    ] = False,
) -> None:
    """Pre-fetch the diffusers-format weights (or, with --lm, the 5 Hz LM) with a progress bar (honours HF_TOKEN
    and HF_HOME)."""
    from huggingface_hub import snapshot_download

    from acefarm.model.pipeline import hub_cache_dir

    settings = Settings()
    repo = model_id or (settings.lm_model_id if lm else settings.model_id)
    pinned = revision or (settings.lm_model_revision if lm else settings.model_revision)
    token = settings.hf_token.get_secret_value() if settings.hf_token else None
    typer.echo(f"Downloading {repo} ({pinned or 'main'}) ...")
    try:
        path = snapshot_download(
            repo,
            revision=pinned,
            allow_patterns=["*.json", "*.safetensors", "*.txt", "*.jinja", "*.model"] if lm else None,
            token=token,
            cache_dir=None if local_dir else hub_cache_dir(settings),
            local_dir=str(local_dir) if local_dir else None,
        )
    except Exception as error:  # network, auth, missing repo/revision: say it plainly
        typer.echo(
            f"Could not download {repo}: {type(error).__name__}: {error}\n"
            "Check the network and HF_TOKEN (gated or private repos), or copy a diffusers-format "
            "ACE-Step 1.5 directory to this machine and set MODEL_PATH to it.",
            err=True,
        )
        raise typer.Exit(1) from None
    typer.echo(f"Done: {path}")
    if local_dir:
        typer.echo(f"Use it with {'LM_MODEL_PATH' if lm else 'MODEL_PATH'}={path}")


@models_app.command()
def info(
    load: Annotated[bool, typer.Option(help="Load the pipeline to report device, dtype, size and tasks.")] = True,
) -> None:
    """Print what would be loaded from where (and, with --load, what is loaded onto which device)."""
    from acefarm.model.pipeline import hub_cache_dir, model_source

    settings = Settings()
    source, local = model_source(settings)
    summary: dict[str, object] = {
        "engine": settings.engine,
        "source": source,
        "local": local,
        "revision": None if local else settings.model_revision,
        "cache_dir": None if local else hub_cache_dir(settings) or "huggingface_hub default",
        "device_setting": settings.device,
        "dtype_setting": settings.dtype,
        "cpu_offload": settings.cpu_offload,
        "torch_compile": settings.torch_compile,
        "vae_tiling": settings.vae_tiling,
    }
    if load:
        from acefarm.model.pipeline import load_pipeline

        try:
            _, loaded = load_pipeline(settings)
        except (OSError, ValueError) as error:
            typer.echo(json.dumps(summary, indent=2))
            typer.echo(f"Cannot load: {error}", err=True)
            raise typer.Exit(1) from None
        summary["loaded"] = loaded.as_dict()
    typer.echo(json.dumps(summary, indent=2, default=str))


@models_app.command("make-tiny-lm")
def make_tiny_lm_command(
    directory: Annotated[Path, typer.Argument(help="Where to write the LM (created).")],
    seed: Annotated[int, typer.Option(help="Seed of the random weights.")] = 0,
) -> None:
    """Build only the tiny random 5 Hz LM (a toy Qwen3 with the audio code tokens). Its plans are noise."""
    from acefarm.model.lm.tiny import make_tiny_lm

    path = make_tiny_lm(directory, seed=seed)
    typer.echo(f"Tiny random 5 Hz LM written to {path}. Use it with LM_MODEL_PATH={path}")


@models_app.command("make-tiny")
def make_tiny_command(
    directory: Annotated[Path, typer.Argument(help="Where to write the checkpoint (created).")],
    latent_dim: Annotated[int, typer.Option(help="Latent channels (the real model has 64).")] = 8,
    seed: Annotated[int, typer.Option(help="Seed of the random weights.")] = 0,
    turbo: Annotated[bool, typer.Option(help="Mark it turbo (no extract/lego/complete).")] = False,
    lm: Annotated[bool, typer.Option(help="Also build a tiny random 5 Hz LM in DIRECTORY/lm.")] = True,
) -> None:
    """Build a tiny random ACE-Step 1.5 checkpoint (seconds, about 1 MB) and 5 Hz LM. Their output is noise."""
    from acefarm.model.tiny import make_tiny

    path = make_tiny(directory, latent_dim=latent_dim, seed=seed, turbo=turbo)
    typer.echo(f"Tiny random checkpoint written to {path} (its audio is noise). Use it with MODEL_PATH={path}")
    if lm:
        from acefarm.model.lm.tiny import make_tiny_lm

        lm_path = make_tiny_lm(path / "lm", seed=seed)
        typer.echo(f"Tiny random 5 Hz LM written to {lm_path}. Use it with LM_MODEL_PATH={lm_path}")
