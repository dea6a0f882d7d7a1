"""Which environment variables acefarm reads, and where they are documented.

Shared by the deploy checks: the names come from the `Settings` fields (upper-cased, or their aliases)
plus every string literal the service packages read through `os.environ` / `os.getenv`.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import AliasChoices, TypeAdapter
from pydantic.fields import FieldInfo

from acefarm.infra.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SERVICE_PACKAGES = ("acefarm", "gateway", "streams", "gpu_consumer", "trainer", "scheduler", "schemas")
CLIENT_PACKAGE = "acefarm/client"
"""The Python client: what it reads (ACEFARM_URL, ACEFARM_API_KEY) is its user's environment, not a deployment
setting, so it is documented in docs/client.md and README's client sections rather than in the config table."""

# Read by libraries rather than by acefarm's code, but part of its deployment interface.
EXTERNAL_ENV = {
    "AWS_ACCESS_KEY_ID": "S3 credentials (read by botocore)",
    "AWS_SECRET_ACCESS_KEY": "S3 credentials (read by botocore)",
    "CUDA_VISIBLE_DEVICES": "which GPUs the process sees (read by the CUDA runtime)",
}


def settings_env_names() -> dict[str, str]:
    """Environment variable name -> Settings field name, for every field."""
    prefix = str(Settings.model_config.get("env_prefix") or "")
    names: dict[str, str] = {}
    for field_name, info in Settings.model_fields.items():
        alias = info.validation_alias or info.alias
        if isinstance(alias, str):
            names[alias.upper()] = field_name
        elif isinstance(alias, AliasChoices):
            for choice in alias.choices:
                if isinstance(choice, str):
                    names[choice.upper()] = field_name
        else:
            names[(prefix + field_name).upper()] = field_name
    return names


def settings_adapter(env_name: str) -> tuple[FieldInfo, TypeAdapter[Any]]:
    """The Settings field behind `env_name` and a validator for values given as text."""
    info = Settings.model_fields[settings_env_names()[env_name]]
    annotation: Any = info.annotation
    if info.metadata:
        annotation = Annotated[annotation, *info.metadata]
    return info, TypeAdapter(annotation)


@dataclass(frozen=True)
class EnvRead:
    """One place where code reads an environment variable by a literal name."""

    name: str
    path: Path
    line: int


def _is_environ(node: ast.expr) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "environ") or (
        isinstance(node, ast.Name) and node.id == "environ"
    )


def _literal(node: ast.expr, constants: dict[str, str]) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    return None


def env_reads_in_source(source: str, path: Path) -> list[EnvRead]:
    """Literal names read via `os.environ[...]`, `os.environ.get/pop/setdefault(...)`, `"X" in os.environ`,
    `os.getenv(...)` and `environ.get(...)`; module-level string constants used as the name count too."""
    tree = ast.parse(source, filename=str(path))
    constants = {
        target.id: stmt.value.value
        for stmt in tree.body
        if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)
        for target in stmt.targets
        if isinstance(target, ast.Name)
    }
    found: list[EnvRead] = []

    def add(node: ast.expr, at: ast.AST) -> None:
        name = _literal(node, constants)
        if name:
            found.append(EnvRead(name, path, getattr(at, "lineno", 0)))

    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            if (
                (isinstance(func, ast.Attribute) and func.attr == "getenv")
                or (isinstance(func, ast.Name) and func.id == "getenv")
                or (
                    isinstance(func, ast.Attribute)
                    and func.attr in {"get", "pop", "setdefault"}
                    and _is_environ(func.value)
                )
            ):
                add(node.args[0], node)
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and _is_environ(node.value):
            add(node.slice, node)
        elif isinstance(node, ast.Compare):
            for op, right in zip(node.ops, node.comparators, strict=True):
                if isinstance(op, ast.In | ast.NotIn) and _is_environ(right):
                    add(node.left, node)
    return found


def env_reads(packages: Iterable[str] = SERVICE_PACKAGES, skip: str | None = CLIENT_PACKAGE) -> list[EnvRead]:
    """Every literal environment read in the packages' Python files, except those under `skip`."""
    reads: list[EnvRead] = []
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT)
            if skip is None or not relative.is_relative_to(skip):
                reads.extend(env_reads_in_source(path.read_text(encoding="utf-8"), relative))
    return reads


def required_env_names() -> set[str]:
    """Every environment variable the deployment documents must cover."""
    return set(settings_env_names()) | {read.name for read in env_reads()} | set(EXTERNAL_ENV)


def mentioned(name: str, text: str) -> bool:
    """Whether `name` appears in `text` as a whole variable name (not as part of a longer one)."""
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])", text) is not None


@dataclass(frozen=True)
class EnvExampleEntry:
    """One `NAME=value` line of .env.example (commented out or not) and the comment above it."""

    name: str
    value: str
    active: bool
    comment: str
    line: int


_ASSIGN = re.compile(r"^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$")


def parse_env_example(text: str) -> list[EnvExampleEntry]:
    """Entries of an env file. An entry's comment is the run of `# prose` lines directly above it (reset
    by a blank line or another assignment) plus any inline `  # ...` after the value."""
    entries: list[EnvExampleEntry] = []
    pending: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        match = _ASSIGN.match(line)
        if match:
            value, _, inline = match.group(3).partition(" #")
            comment = " ".join([*pending, inline.strip()]).strip()
            entries.append(EnvExampleEntry(match.group(2), value.strip(), match.group(1) is None, comment, number))
            pending = []
        elif line.startswith("#"):
            pending.append(line.lstrip("#").strip())
        else:
            pending = []
    return entries
