"""Loading docker-compose.yml the way Compose sees it: YAML (anchors and merge keys resolved) and
`${VAR}` / `${VAR:-default}` interpolation with the defaults written in the file."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.envdocs import ROOT

COMPOSE_FILE = ROOT / "docker-compose.yml"
# `$$` is a literal dollar; otherwise ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?err}, ${NAME?err}.
_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def load(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """The compose file as a mapping (not interpolated)."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path} is not a mapping"
    return data


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """`value` with variables replaced from `env`, else by their defaults (unset and no default: empty)."""
    env = env or {}

    def repl(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        op, default = match.group(2), match.group(3)
        if name in env and (env[name] or not (op or "").startswith(":")):
            return env[name]
        if op in (":-", "-"):
            return default or ""
        return ""

    return _VAR.sub(repl, value)


def variables(node: Any) -> set[str]:
    """Names of every variable interpolated anywhere in `node`."""
    if isinstance(node, str):
        return {m.group(1) or m.group(4) for m in _VAR.finditer(node) if m.group(0) != "$$"}
    if isinstance(node, dict):
        return set().union(*(variables(v) for v in node.values()), set())
    if isinstance(node, list):
        return set().union(*(variables(v) for v in node), set())
    return set()


def environment(service: dict[str, Any]) -> dict[str, str | None]:
    """A service's environment as a mapping (list form accepted); None marks a pass-through name."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.partition("=") for item in env)
        return {k: (v if sep else None) for k, sep, v in pairs}
    return {str(k): (None if v is None else interpolate(str(v))) for k, v in env.items()}


def raw_environment(service: dict[str, Any]) -> dict[str, str | None]:
    """A service's environment as written (not interpolated); None marks a pass-through name."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.partition("=") for item in env)
        return {k: (v if sep else None) for k, sep, v in pairs}
    return {str(k): (None if v is None else str(v)) for k, v in env.items()}


def is_required(value: str | None) -> bool:
    """Whether `value` is one required variable (`${VAR:?...}` / `${VAR?...}`), which compose must be given."""
    match = _VAR.fullmatch(value or "")
    return bool(match and (match.group(2) or "").endswith("?"))


def gpu_device_ids(service: dict[str, Any]) -> list[str]:
    """Host GPU ids a service reserves through deploy.resources.reservations.devices."""
    devices = (((service.get("deploy") or {}).get("resources") or {}).get("reservations") or {}).get("devices") or []
    ids: list[str] = []
    for device in devices:
        if "gpu" in (device.get("capabilities") or []) or device.get("driver") == "nvidia":
            ids.extend(interpolate(str(i)) for i in device.get("device_ids") or [])
    return ids


def command(service: dict[str, Any]) -> list[str]:
    """The service's command as a list of words."""
    cmd = service.get("command") or []
    return cmd.split() if isinstance(cmd, str) else [str(c) for c in cmd]
