"""`acefarm storage`: apply the retention settings to the object store (docs/reliability.md#retention)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import typer

from acefarm.infra.retention import retention_rules, setup_lifecycle, sweep
from acefarm.infra.settings import Settings
from acefarm.infra.storage import open_storage

storage_app = typer.Typer(no_args_is_help=True)


def _run(ctx: typer.Context, backend: Literal["local", "s3"], action: Callable[[Any], Awaitable[Any]]) -> Any:
    """Run `action` on the configured storage, which must be the `backend` one."""
    settings: Settings = ctx.find_root().obj
    if settings.storage_backend != backend:
        raise typer.BadParameter(f"needs STORAGE_BACKEND={backend}")
    storage = open_storage(settings)

    async def run() -> Any:
        try:
            return await action(storage)
        finally:
            await storage.close()

    return asyncio.run(run())


@storage_app.command("setup-lifecycle")
def setup_lifecycle_command(ctx: typer.Context) -> None:
    """Install the bucket's lifecycle rules (one per expiring prefix, from `*_RETENTION_DAYS`) and print them."""
    rules = retention_rules(ctx.find_root().obj)
    typer.echo(json.dumps(_run(ctx, "s3", lambda s: setup_lifecycle(s, rules)), indent=2))


@storage_app.command("sweep")
def sweep_command(ctx: typer.Context) -> None:
    """Delete files of local storage (OUTPUT_DIR) past their lifetime, once; print how many went per prefix."""
    rules = retention_rules(ctx.find_root().obj)
    typer.echo(json.dumps(_run(ctx, "local", lambda s: sweep(s, rules))))
