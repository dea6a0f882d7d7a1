"""The `acefarm` command: run the whole stack locally (`dev`), or one service, or manage models; and talk to a
running farm as a client (`generate`, `status`, `cancel`, `download`, `loras`, `train`: `client_cli`).

The developer tools sit above the services: each service command calls that service's run function in
this process (the service's package is imported only when its command runs).
Settings are read once, in the root callback, and reach commands as `ctx.obj`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from acefarm.devtools import client_cli
from acefarm.devtools.keys_cli import keys_app
from acefarm.devtools.models_cli import models_app
from acefarm.devtools.schemas_cli import schemas_app
from acefarm.devtools.storage_cli import storage_app
from acefarm.infra.settings import Settings, get_settings

if TYPE_CHECKING:
    from acefarm.runtime.service import WorkerKind

app = typer.Typer(help="acefarm: ACE-Step 1.5 behind a REST + Kafka API.", no_args_is_help=True)
app.add_typer(models_app, name="models", help="Download, inspect or build ACE-Step checkpoints.")
app.add_typer(schemas_app, name="schemas", help="Export the event and API contract as JSON Schema.")
app.add_typer(keys_app, name="keys", help="Create, list or revoke API keys.")
app.add_typer(storage_app, name="storage", help="Retention: S3 lifecycle rules, or sweep local storage.")
client_cli.register(app)


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


@app.command()
def webhooks(ctx: typer.Context) -> None:
    """Run the webhook service (signed deliveries with durable retries) until SIGINT/SIGTERM."""
    from webhooks.service import run_webhooks

    run_webhooks(_settings(ctx))


_DEVICE_HELP = "Device for the model, e.g. cuda:0 or cpu (overrides DEVICE)."
_STATIC_HELP = "Join with group.instance.id = WORKER_ID: quick restarts cause no rebalance."


def _run_worker(
    ctx: typer.Context, kind: WorkerKind[Any], device: str | None, grace: float | None, static_membership: bool
) -> None:
    """Run one worker of `kind` with the command's options applied to the settings."""
    from acefarm.runtime.service import run_worker

    settings = _settings(ctx)
    if device:
        settings = settings.model_copy(update={"device": device})
    if static_membership and not settings.worker_id:
        raise typer.BadParameter("--static-membership needs a stable WORKER_ID", param_hint="--static-membership")
    run_worker(settings, kind, grace_s=grace, static_membership=static_membership)


@app.command("gpu-consumer")
def gpu_consumer(
    ctx: typer.Context,
    device: Annotated[str | None, typer.Option(help=_DEVICE_HELP)] = None,
    grace: Annotated[
        float | None,
        typer.Option(help="Seconds a running job may finish after SIGTERM before it is left uncommitted [30]."),
    ] = None,
    static_membership: Annotated[bool, typer.Option(help=_STATIC_HELP)] = False,
) -> None:
    """Run one GPU consumer (one per GPU): generation jobs, one at a time."""
    from gpu_consumer.worker import GPU_CONSUMER

    _run_worker(ctx, GPU_CONSUMER, device, grace, static_membership)


@app.command()
def trainer(
    ctx: typer.Context,
    device: Annotated[str | None, typer.Option(help=_DEVICE_HELP)] = None,
    grace: Annotated[
        float | None,
        typer.Option(help="Seconds a running job may take after SIGTERM to checkpoint and stop [60]."),
    ] = None,
    static_membership: Annotated[bool, typer.Option(help=_STATIC_HELP)] = False,
) -> None:
    """Run one LoRA trainer (one per GPU): training jobs, one at a time."""
    from trainer.worker import TRAINER

    _run_worker(ctx, TRAINER, device, grace, static_membership)


@app.command()
def scheduler(ctx: typer.Context) -> None:
    """Run the fair-queue scheduler: intake topic to ready topic, round-robin across owners (docs/scheduling.md)."""
    from scheduler.service import run_scheduler

    run_scheduler(_settings(ctx))


@app.command()
def planner(
    ctx: typer.Context,
    device: Annotated[
        str | None, typer.Option(help="Device for the LM, e.g. cuda:0 or cpu (overrides LM_DEVICE).")
    ] = None,
    grace: Annotated[
        float | None, typer.Option(help="Seconds a running LM job may finish after SIGTERM before it is redone [20].")
    ] = None,
    static_membership: Annotated[bool, typer.Option(help=_STATIC_HELP)] = False,
) -> None:
    """Run one planner (one per LM GPU): ACE-Step's 5 Hz LM jobs, one at a time (docs/planner.md)."""
    from planner.worker import PLANNER

    if device:
        ctx.find_root().obj = _settings(ctx).model_copy(update={"lm_device": device})
    _run_worker(ctx, PLANNER, None, grace, static_membership)


@app.command()
def dev(
    port: Annotated[int, typer.Option(help="Gateway port.")] = 8000,
    host: Annotated[str, typer.Option(help="Gateway bind address.")] = "127.0.0.1",
    trainer: Annotated[bool, typer.Option(help="Also run a LoRA trainer.")] = True,
    planner: Annotated[
        bool, typer.Option(help="Also run the 5 Hz LM planner (tiny random LM without weights).")
    ] = True,
) -> None:
    """Run everything locally: embedded broker (unless KAFKA_BOOTSTRAP_SERVERS is set), gateway, streams,
    the scheduler, one GPU consumer, a planner and a trainer, all logging to this terminal. Ctrl-C stops them all."""
    from acefarm.devtools.devrun import run_dev

    raise typer.Exit(run_dev(host=host, port=port, with_trainer=trainer, with_planner=planner))


def main() -> None:
    """Entry point of the `acefarm` console script."""
    app()
