"""`acefarm schemas export`: write the contract's JSON Schema files for other teams."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from schemas.export import DEFAULT_DIR, export

schemas_app = typer.Typer(no_args_is_help=True)


@schemas_app.command("export")
def export_command(
    directory: Annotated[Path, typer.Argument(help="Target directory.")] = DEFAULT_DIR,
) -> None:
    """Write one JSON Schema file per event and API body into DIRECTORY."""
    for path in export(directory):
        typer.echo(path)
