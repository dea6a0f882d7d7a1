"""The `acefarm` client commands against a running farm: as processes where it matters (a whole `generate`,
signals), in this process otherwise."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import soundfile as sf

from acefarm.client import Client
from acefarm.devtools.client_progress import ExitCode
from schemas.status import TaskState
from tests.client.conftest import Farm
from tests.support.processes import ROOT

pytestmark = pytest.mark.timeout(300)

SLOW = ["a slow sine step_s=0.5", "--duration", "1.5", "--steps", "40", "--no-progress"]


def _task_id(stderr: str) -> str:
    return next(line.split()[1] for line in stderr.splitlines() if line.startswith("task "))


def test_generate_writes_the_file_then_status_and_download_find_it(
    farm: Farm, tmp_path: Path, lyrics_file: Path
) -> None:
    out = tmp_path / "song.mp3"
    done = farm.run("generate", "warm lofi", "--duration", "1.5", "--lyrics-file", str(lyrics_file), "--out", str(out))
    assert done.returncode == ExitCode.OK, done.stderr
    assert done.stdout.strip() == str(out)
    info = sf.info(out)
    assert info.format == "MP3" and abs(info.duration - 1.5) < 0.1, "the --out suffix chose the format"
    task_id = _task_id(done.stderr)

    shown = farm.invoke("status", task_id)
    assert shown.exit_code == ExitCode.OK and json.loads(shown.stdout)["status"] == "success"
    fetched = farm.invoke("download", task_id, "--out", f"{tmp_path}/copies/")
    assert fetched.exit_code == ExitCode.OK
    assert Path(fetched.stdout.strip()).read_bytes() == out.read_bytes()


def test_a_failed_job_exits_1_and_says_why(farm: Farm, tmp_path: Path) -> None:
    done = farm.invoke("generate", "please explode", "--duration", "1.5", "--out", str(tmp_path / "x.wav"))
    assert done.exit_code == ExitCode.FAILED
    assert "exploded on purpose" in done.stderr and not (tmp_path / "x.wav").exists()


def test_a_bad_key_exits_4_with_the_apis_message(farm: Farm) -> None:
    done = farm.invoke("status", "some-task", api_key="acefarm_nope_0000")
    assert done.exit_code == ExitCode.HTTP_ERROR
    assert "HTTP 401" in done.stderr and "API key" in done.stderr


def test_bad_arguments_exit_2(farm: Farm, lyrics_file: Path) -> None:
    assert farm.invoke("generate", "x", "--duration", "0").exit_code == ExitCode.USAGE
    both = farm.invoke("generate", "x", "--lyrics", "la", "--lyrics-file", str(lyrics_file))
    assert both.exit_code == ExitCode.USAGE and "not both" in both.stderr


def test_loras_lists_nothing_yet(farm: Farm) -> None:
    listed = farm.invoke("loras", "--json")
    assert listed.exit_code == ExitCode.OK and json.loads(listed.stdout) == []


@contextmanager
def _generating(farm: Farm, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """A `generate` of a slow job running in the background (stdin not a terminal), and its task id."""
    process = subprocess.Popen(
        [sys.executable, "-m", "acefarm", "generate", *SLOW, "--out", str(tmp_path)],
        cwd=ROOT,
        env=farm.cli_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        assert line.startswith("task "), line + process.stderr.read()
        yield process, line.split()[1]
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def test_a_job_cancelled_elsewhere_exits_3(farm: Farm, tmp_path: Path) -> None:
    with _generating(farm, tmp_path) as (process, task_id), Client(farm.url, farm.api_key) as client:
        next(s for s in client.events(task_id) if s.status is TaskState.RUNNING)
        client.cancel(task_id)
        assert process.wait(timeout=60) == ExitCode.CANCELLED


def test_ctrl_c_without_a_terminal_leaves_the_job_running_and_prints_its_id(farm: Farm, tmp_path: Path) -> None:
    with _generating(farm, tmp_path) as (process, task_id), Client(farm.url, farm.api_key) as client:
        next(s for s in client.events(task_id) if s.status is TaskState.RUNNING)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == ExitCode.INTERRUPTED
        assert process.stderr is not None
        assert f"Job {task_id} keeps running" in process.stderr.read()
        assert client.status(task_id).status is TaskState.RUNNING
        client.cancel(task_id)
        assert client.wait(task_id, timeout_s=60).status is TaskState.CANCELLED
