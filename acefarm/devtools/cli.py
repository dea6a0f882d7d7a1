"""The `acefarm` command: run the whole stack locally (`dev`), or one service, or manage models.

The developer tools sit above the services: `gateway` and `streams` call the service's run function
in this process. Settings are read once, in the root callback, and reach commands as `ctx.obj`.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from acefarm.devtools.keys_cli import keys_app
from acefarm.devtools.models_cli import models_app
from acefarm.devtools.schemas_cli import schemas_app
from acefarm.infra.settings import Settings, get_settings

app = typer.Typer(help="acefarm: ACE-Step 1.5 behind a REST + Kafka API.", no_args_is_help=True)
app.add_typer(models_app, name="models", help="Download, inspect or build ACE-Step checkpoints.")
app.add_typer(schemas_app, name="schemas", help="Export the event and API contract as JSON Schema.")
app.add_typer(keys_app, name="keys", help="Create, list or revoke API keys.")

_PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


def _exec_module(module: str, args: list[str]) -> None:
    """Replace this process with `python -m module args...`."""
    os.execv(sys.executable, [sys.executable, "-m", module, *args])


@app.callback()
def _load_settings(ctx: typer.Context) -> None:
    """Read the settings (environment and .env) once for every command."""
    ctx.obj = get_settings()


def _settings(ctx: typer.Context) -> Settings:
    """The settings the root callback read."""
    settings: Settings = ctx.find_root().obj
    return settings


@app.command()
def gateway(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Bind address (default: GATEWAY_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: GATEWAY_PORT).")] = None,
) -> None:
    """Run the REST/SSE gateway until SIGINT/SIGTERM."""
    from gateway.server import run_gateway

    settings = _settings(ctx)
    run_gateway(settings, host or settings.gateway_host, port if port is not None else settings.gateway_port)


@app.command()
def streams(ctx: typer.Context) -> None:
    """Run the status-table stream processor until SIGINT/SIGTERM."""
    from streams.app import run_streams

    run_streams(_settings(ctx))


@app.command("gpu-consumer", context_settings=_PASSTHROUGH)
def gpu_consumer(ctx: typer.Context) -> None:
    """Run one GPU consumer (options: --device cuda:N)."""
    _exec_module("gpu_consumer", ctx.args)


@app.command(context_settings=_PASSTHROUGH)
def trainer(ctx: typer.Context) -> None:
    """Run one LoRA trainer (options: --device cuda:N)."""
    _exec_module("trainer", ctx.args)


@app.command()
def dev(
    port: Annotated[int, typer.Option(help="Gateway port.")] = 8000,
    host: Annotated[str, typer.Option(help="Gateway bind address.")] = "127.0.0.1",
    trainer: Annotated[bool, typer.Option(help="Also run a LoRA trainer.")] = True,
) -> None:
    """Run everything locally: embedded broker (unless KAFKA_BOOTSTRAP_SERVERS is set), gateway, streams,
    one GPU consumer and a trainer, all logging to this terminal. Ctrl-C stops them all."""
    from acefarm.devtools.devrun import run_dev

    raise typer.Exit(run_dev(host=host, port=port, with_trainer=trainer))


def main() -> None:
    """Entry point of the `acefarm` console script."""
    app()
