"""Following one job from the terminal: a live progress bar on stderr, and what Ctrl-C does to the job."""

from __future__ import annotations

import sys
from enum import IntEnum
from types import TracebackType
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TaskProgressColumn, TextColumn

from schemas.status import TaskState, TaskStatusResponse

if TYPE_CHECKING:
    from acefarm.client import Client


class ExitCode(IntEnum):
    """Exit statuses of the client commands (docs/client.md)."""

    OK = 0
    FAILED = 1
    USAGE = 2
    CANCELLED = 3
    HTTP_ERROR = 4
    INTERRUPTED = 130
    """Ctrl-C, and the job was left running."""


OUTCOME_CODES = {
    TaskState.SUCCESS: ExitCode.OK,
    TaskState.FAILED: ExitCode.FAILED,
    TaskState.CANCELLED: ExitCode.CANCELLED,
}
"""The exit status for a job's final state."""


def describe(status: TaskStatusResponse) -> tuple[str, str]:
    """The bar's label (the state or stage) and its detail: queue position, step, loss, ETA."""
    position: int | None = getattr(status, "queue_position", None)  # shown by gateways that report it
    parts: list[str] = []
    if status.status is TaskState.PENDING:
        label = "queued"
        if position is not None:
            parts.append(f"position {position}")
    elif status.status is TaskState.RUNNING:
        label = status.stage.value if status.stage else "starting"
        if status.step is not None and status.total_steps:
            parts.append(f"step {status.step}/{status.total_steps}")
        if status.loss is not None:
            parts.append(f"loss {status.loss:.4f}")
    else:
        label = status.status.value
        if status.error:
            parts.append(status.error)
    if status.eta_s is not None and not status.status.is_final:
        parts.append(f"ETA {status.eta_s:.0f}s")
    return label, " · ".join(parts)


class JobProgress:
    """A progress bar for one job on stderr (nothing when `enabled` is false), updated with each status."""

    def __init__(self, task_id: str, enabled: bool) -> None:
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description:<12}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[detail]}"),
            console=Console(stderr=True),
            disable=not enabled,
        )
        self._bar: TaskID = self._progress.add_task("submitted", total=1.0, detail=task_id)

    def __enter__(self) -> JobProgress:
        self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._progress.stop()

    def update(self, status: TaskStatusResponse) -> None:
        """Show `status`."""
        label, detail = describe(status)
        self._progress.update(self._bar, completed=status.progress, description=label, detail=detail)

    def stop(self) -> None:
        """Stop redrawing (before asking a question)."""
        self._progress.stop()


def follow(client: Client, task_id: str, show_progress: bool) -> TaskStatusResponse:
    """Follow the job to its final status with a progress bar; on Ctrl-C ask whether to cancel it (`interrupted`)."""
    with JobProgress(task_id, show_progress) as view:
        try:
            return client.wait(task_id, on_status=view.update)
        except KeyboardInterrupt:
            view.stop()
    return interrupted(client, task_id)


def interrupted(client: Client, task_id: str) -> TaskStatusResponse:
    """After Ctrl-C: in a terminal, ask whether to cancel the job and if so return its final status; otherwise
    (or when the answer is no) say that it keeps running and exit with `ExitCode.INTERRUPTED`."""
    from acefarm.client.errors import AcefarmError

    if sys.stdin.isatty() and _confirm(f"\nCancel job {task_id}?"):
        try:
            client.cancel(task_id)
        except AcefarmError as error:
            if error.status_code != 409:  # 409: it ended meanwhile; its final status follows
                raise
        return client.wait(task_id)
    typer.echo(f"Job {task_id} keeps running; follow it with: acefarm status {task_id} --follow", err=True)
    raise typer.Exit(ExitCode.INTERRUPTED)


def _confirm(question: str) -> bool:
    try:
        return typer.confirm(question, default=False, err=True)
    except (typer.Abort, KeyboardInterrupt):  # a second Ctrl-C or end of input: leave the job alone
        return False
