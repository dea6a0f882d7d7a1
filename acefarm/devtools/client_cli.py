"""Client commands of `acefarm`: generate, status, cancel, download, loras, train — HTTP calls to a gateway.

They use `acefarm.client` and run no service. `--url` and `--api-key` default to `ACEFARM_URL` and
`ACEFARM_API_KEY`. Results go to stdout (file paths, ids, JSON), progress and errors to stderr; the exit
status says what happened (`ExitCode`, docs/client.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError

from acefarm.client.config import API_KEY_ENV, URL_ENV
from acefarm.client.files import is_directory
from acefarm.devtools.client_progress import OUTCOME_CODES, ExitCode, follow
from schemas.generation import AudioFormat
from schemas.status import TaskState, TaskStatusResponse
from schemas.training import TrainingOptions

if TYPE_CHECKING:
    from acefarm.client import Client

Url = Annotated[str | None, typer.Option("--url", envvar=URL_ENV, help="Gateway URL (default: http://127.0.0.1:8000).")]
ApiKey = Annotated[str | None, typer.Option("--api-key", envvar=API_KEY_ENV, help="API key.", show_default=False)]
Progress = Annotated[bool, typer.Option("--progress/--no-progress", help="Show a live progress bar on stderr.")]


@contextmanager
def _exit_codes() -> Iterator[None]:
    """Turn client errors into a message on stderr and the documented exit status."""
    from acefarm.client.errors import AcefarmError, TaskFailed

    try:
        yield
    except TaskFailed as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(ExitCode.CANCELLED if error.cancelled else ExitCode.FAILED) from None
    except AcefarmError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(ExitCode.HTTP_ERROR) from None
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'request'}: {e['msg']}" for e in error.errors())
        typer.echo(f"error: {problems}", err=True)
        raise typer.Exit(ExitCode.USAGE) from None


def _connect(url: str | None, api_key: str | None) -> Client:
    """A client of the gateway at `url` (httpx is imported only by commands that talk to a gateway)."""
    from acefarm.client.sync import Client

    return Client(url, api_key)


def _print_json(status: TaskStatusResponse) -> None:
    typer.echo(status.model_dump_json(indent=2, exclude_none=True))


def _finish(client: Client, status: TaskStatusResponse, out: str | None) -> None:
    """Download a successful job's files to `out` (printing their paths), or exit with the outcome's code."""
    if status.status is not TaskState.SUCCESS:
        from acefarm.client.errors import TaskFailed

        raise TaskFailed(status)
    if out is not None:
        for path in client.download_results(status, out):
            typer.echo(path)


def _format_for(out: str, chosen: AudioFormat | None) -> AudioFormat | None:
    if chosen is not None or is_directory(out):
        return chosen
    return next((f for f in AudioFormat if Path(out).suffix.lower() == f".{f.value}"), None)


def generate(
    prompt: Annotated[str, typer.Argument(help="Caption: genre, mood, instruments.")],
    duration: Annotated[float, typer.Option(help="Seconds of music.")] = 30.0,
    lyrics: Annotated[str | None, typer.Option(help="Lyrics, with tags such as \\[verse] and \\[chorus].")] = None,
    lyrics_file: Annotated[Path | None, typer.Option(help="Read the lyrics from this UTF-8 file.", exists=True)] = None,
    out: Annotated[
        str, typer.Option(help="File to write (takes after the first get -1, -2...), or a directory (ending in /).")
    ] = ".",
    audio_format: Annotated[
        AudioFormat | None, typer.Option("--format", help="wav, flac or mp3 (default: the --out suffix, else wav).")
    ] = None,
    style: Annotated[str | None, typer.Option(help="Style tags.")] = None,
    instrumental: Annotated[bool, typer.Option(help="No vocals.")] = False,
    bpm: Annotated[int | None, typer.Option(help="Tempo.")] = None,
    key: Annotated[str | None, typer.Option(help="Key and scale, e.g. 'F minor'.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    steps: Annotated[int | None, typer.Option(help="Diffusion steps.")] = None,
    takes: Annotated[int | None, typer.Option(help="How many takes (batch_size).")] = None,
    lora: Annotated[str | None, typer.Option(help="LoRA style id (see `acefarm loras`).")] = None,
    lora_scale: Annotated[float | None, typer.Option(help="LoRA strength, 0-2.")] = None,
    idempotency_key: Annotated[str | None, typer.Option(help="Retry-safe submit key (default: a new UUID).")] = None,
    progress: Progress = True,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """Generate music and download it: `acefarm generate "warm lofi" --duration 30 --out song.mp3`.

    Prints the written files. Ctrl-C asks whether to cancel the job. Exit status: 0 done, 1 the job failed,
    2 bad arguments, 3 cancelled, 4 the API refused or could not be reached, 130 interrupted (job left running).
    """
    if lyrics is not None and lyrics_file is not None:
        raise typer.BadParameter("give --lyrics or --lyrics-file, not both", param_hint="--lyrics-file")
    given: dict[str, Any] = {
        "prompt": prompt,
        "duration": duration,
        "lyrics": lyrics_file.read_text(encoding="utf-8") if lyrics_file is not None else lyrics,
        "audio_format": _format_for(out, audio_format),
        "style": style,
        "instrumental": instrumental or None,
        "bpm": bpm,
        "key": key,
        "seed": seed,
        "inference_steps": steps,
        "batch_size": takes,
        "lora_id": lora,
        "lora_scale": lora_scale,
    }
    with _exit_codes(), _connect(url, api_key) as client:
        accepted = client.submit(idempotency_key=idempotency_key, **{k: v for k, v in given.items() if v is not None})
        typer.echo(f"task {accepted.task_id}", err=True)
        _finish(client, follow(client, accepted.task_id, progress), out)


def status(
    task_id: Annotated[str, typer.Argument(help="The task id.")],
    follow_job: Annotated[
        bool, typer.Option("--follow", help="Show progress until the job ends; exit with its outcome.")
    ] = False,
    progress: Progress = True,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """Print a job's status as JSON (with --follow: once it has ended, exit status 0, 1 or 3 as for generate)."""
    with _exit_codes(), _connect(url, api_key) as client:
        current = follow(client, task_id, progress) if follow_job else client.status(task_id)
        _print_json(current)
        if follow_job:
            raise typer.Exit(OUTCOME_CODES[current.status])


def cancel(
    task_id: Annotated[str, typer.Argument(help="The task id.")], url: Url = None, api_key: ApiKey = None
) -> None:
    """Cancel a pending or running job (on one that already ended: delete its files); prints its status as JSON."""
    with _exit_codes(), _connect(url, api_key) as client:
        _print_json(client.cancel(task_id))


def download(
    target: Annotated[str, typer.Argument(help="A task id (all its files) or one file URL.")],
    out: Annotated[str, typer.Option(help="File or directory (ending in /) to write to.")] = ".",
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """Download a finished job's files, or one file URL; prints the written paths."""
    with _exit_codes(), _connect(url, api_key) as client:
        if "/" in target:
            typer.echo(client.download(target, out))
        else:
            _finish(client, client.status(target), out)


def loras(
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifests as JSON.")] = False,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """List your finished LoRA styles and the public ones."""
    with _exit_codes(), _connect(url, api_key) as client:
        manifests = client.loras()
    if as_json:
        typer.echo(json.dumps([m.model_dump(mode="json") for m in manifests], indent=2))
        return
    for m in manifests:
        loss = f"{m.final_loss:.4f}" if m.final_loss is not None else "-"
        shared = "public" if m.public else "private"
        typer.echo(f"{m.lora_id}\t{m.style_name}\tsteps={m.steps_done}\tloss={loss}\t{shared}")


def train(
    dataset_zip: Annotated[Path, typer.Argument(help="Zip of 3-50 tracks (docs/lora.md).", exists=True)],
    style_name: Annotated[str, typer.Option(help="Name of the style.")],
    steps: Annotated[int | None, typer.Option(help="Optimizer steps (default: 1000).")] = None,
    rank: Annotated[int | None, typer.Option(help="LoRA rank (default: 64).")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Learning rate (default: 1e-4).")] = None,
    trigger_tag: Annotated[str | None, typer.Option(help="Tag put in front of every caption.")] = None,
    clip_seconds: Annotated[float | None, typer.Option(help="Clip length (default: 30).")] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the training until it ends.")] = True,
    progress: Progress = True,
    url: Url = None,
    api_key: ApiKey = None,
) -> None:
    """Train a LoRA style from a zip of tracks; prints its lora_id (after it finished, unless --no-wait)."""
    chosen: dict[str, Any] = {"steps": steps, "rank": rank, "learning_rate": learning_rate}
    chosen |= {"trigger_tag": trigger_tag, "clip_seconds": clip_seconds}
    with _exit_codes(), _connect(url, api_key) as client:
        options = TrainingOptions.model_validate({k: v for k, v in chosen.items() if v is not None})
        accepted = client.train_lora(dataset_zip, style_name, options)
        typer.echo(f"task {accepted.task_id}", err=True)
        if wait:
            _finish(client, follow(client, accepted.task_id, progress), None)
        typer.echo(accepted.lora_id)


def register(app: typer.Typer) -> None:
    """Add the client commands to the `acefarm` app."""
    for command in (generate, status, cancel, download, loras, train):
        app.command()(command)
