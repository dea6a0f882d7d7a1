"""The `acefarm` command: run the whole stack locally (`dev`), or one service, or manage models.

Service commands hand over to `python -m <service>` so this package never imports a service.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from acefarm.devtools.models_cli import models_app
from acefarm.devtools.schemas_cli import schemas_app

app = typer.Typer(help="acefarm: ACE-Step 1.5 behind a REST + Kafka API.", no_args_is_help=True)
app.add_typer(models_app, name="models", help="Download, inspect or build ACE-Step checkpoints.")
app.add_typer(schemas_app, name="schemas", help="Export the event and API contract as JSON Schema.")

_PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


def _exec_module(module: str, args: list[str]) -> None:
    """Replace this process with `python -m module args...`."""
    os.execv(sys.executable, [sys.executable, "-m", module, *args])


@app.command(context_settings=_PASSTHROUGH)
def gateway(ctx: typer.Context) -> None:
    """Run the REST/SSE gateway (options: --host, --port)."""
    _exec_module("gateway", ctx.args)


@app.command(context_settings=_PASSTHROUGH)
def streams(ctx: typer.Context) -> None:
    """Run the status-table stream processor."""
    _exec_module("streams", ctx.args)


@app.command("gpu-consumer", context_settings=_PASSTHROUGH)
def gpu_consumer(ctx: typer.Context) -> None:
    """Run one GPU consumer (options: --device cuda:N)."""
    _exec_module("gpu_consumer", ctx.args)


@app.command(context_settings=_PASSTHROUGH)
def trainer(ctx: typer.Context) -> None:
    """Run one LoRA trainer (options: --device cuda:N)."""
    _exec_module("trainer", ctx.args)


@app.command()
def scheduler() -> None:
    """Run the fair-queue scheduler: intake topic to ready topic, round-robin across owners (docs/scheduling.md)."""
    from acefarm.infra.settings import Settings
    from scheduler.service import run_scheduler

    run_scheduler(Settings())


@app.command()
def dev(
    port: Annotated[int, typer.Option(help="Gateway port.")] = 8000,
    host: Annotated[str, typer.Option(help="Gateway bind address.")] = "127.0.0.1",
    trainer: Annotated[bool, typer.Option(help="Also run a LoRA trainer.")] = True,
) -> None:
    """Run everything locally: embedded broker (unless KAFKA_BOOTSTRAP_SERVERS is set), gateway, streams,
    the scheduler, one GPU consumer and a trainer, all logging to this terminal. Ctrl-C stops them all."""
    from acefarm.devtools.devrun import run_dev

    raise typer.Exit(run_dev(host=host, port=port, with_trainer=trainer))


def main() -> None:
    """Entry point of the `acefarm` console script."""
    app()
