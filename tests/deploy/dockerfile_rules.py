"""acefarm's own rules for its Dockerfile, checked on the parsed instructions (dockerfile-parse).

hadolint covers general Dockerfile practice; these cover what only this project knows: the CUDA base
matches the torch build in uv.lock, dependencies install from the lock before the code is copied, every
package is in the image, and the image runs as a non-root user with its caches on volumes.
"""

from __future__ import annotations

import io
import re
import shlex
import tomllib
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from dockerfile_parse import DockerfileParser

from tests.deploy.envdocs import ROOT

SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|CREDENTIAL|PRIVATE|(^|_)API_?KEY|ACCESS_KEY", re.IGNORECASE)
_CUDA_TAG = re.compile(r"^nvidia/cuda:(\d+)\.(\d+)(?:\.\d+)?-(?:base|runtime|cudnn-runtime)-ubuntu\d+\.\d+$")


def parse(text: str) -> list[dict[str, Any]]:
    """Instructions of a Dockerfile (comments included, as dockerfile-parse reports them)."""
    parser = DockerfileParser(fileobj=io.BytesIO(text.encode("utf-8")))
    return list(parser.structure)


def lock_torch_cuda(lock_path: Path = ROOT / "uv.lock") -> str:
    """CUDA major.minor of the torch build uv.lock installs on Linux: the version of the `cuda-toolkit`
    (or, failing that, `nvidia-cuda-runtime`) package torch depends on."""
    lock = tomllib.loads(lock_path.read_text(encoding="utf-8"))
    packages = {p["name"]: p for p in lock["package"]}
    torch_deps = {d["name"] for d in packages["torch"].get("dependencies", [])}
    for name in ("cuda-toolkit", "nvidia-cuda-runtime", "nvidia-cuda-runtime-cu12", "nvidia-cuda-runtime-cu13"):
        if name in packages and (name in torch_deps or name.startswith("nvidia-cuda-runtime")):
            major, minor = packages[name]["version"].split(".")[:2]
            return f"{major}.{minor}"
    raise AssertionError("uv.lock: torch pulls no CUDA runtime package; is it a CPU-only build?")


def installed_torch_cuda() -> str | None:
    """`torch.version.cuda` of the installed torch, read from torch/version.py without importing torch."""
    spec = find_spec("torch")
    if spec is None or spec.origin is None:
        return None
    version_py = Path(spec.origin).with_name("version.py")
    match = re.search(r"^cuda(?::[^=]*)?=\s*'([^']*)'", version_py.read_text(encoding="utf-8"), re.MULTILINE)
    return match.group(1) if match else None


def _words(instruction: dict[str, Any]) -> list[str]:
    return shlex.split(instruction["value"].replace("\\\n", " "), posix=True)


def _env_pairs(instruction: dict[str, Any]) -> dict[str, str]:
    words = _words(instruction)
    if words and "=" not in words[0]:  # legacy `ENV KEY value`
        return {words[0]: " ".join(words[1:])}
    return dict(w.split("=", 1) for w in words if "=" in w)


def check(text: str, cuda: str, packages: list[str], python: str) -> list[str]:
    """Every rule broken by the Dockerfile `text`, as readable problems (empty: all rules hold)."""
    problems: list[str] = []
    instructions = parse(text)
    code = [i for i in instructions if i["instruction"] != "COMMENT"]
    kinds = [i["instruction"] for i in code]

    froms = [i for i in code if i["instruction"] == "FROM"]
    if len(froms) != 1:
        problems.append(f"expected one FROM (one image for every service), found {len(froms)}")
    for instr in froms:
        image = instr["value"].split()[0]
        if ":" not in image or image.endswith(":latest"):
            problems.append(f"base image {image!r} is not pinned to a tag")
        match = _CUDA_TAG.match(image)
        if not match:
            problems.append(f"base image {image!r} is not an nvidia/cuda runtime/base Ubuntu image")
        elif f"{match.group(1)}.{match.group(2)}" != cuda:
            problems.append(f"base image CUDA {match.group(1)}.{match.group(2)} != torch's CUDA build {cuda}")

    for instr in code:
        if instr["instruction"] == "COPY" and "--from=" in instr["value"]:
            source = re.search(r"--from=(\S+)", instr["value"])
            if source and ":" in source.group(1) and source.group(1).endswith(":latest"):
                problems.append(f"COPY --from={source.group(1)} is not pinned")

    python_ok = any(
        (i["instruction"] == "RUN" and f"uv python install {python}" in i["value"])
        or (i["instruction"] == "ENV" and _env_pairs(i).get("UV_PYTHON") == python)
        for i in code
    )
    if not python_ok:
        problems.append(f"Python {python} is not what uv installs (uv python install / UV_PYTHON)")

    syncs = [n for n, i in enumerate(code) if i["instruction"] == "RUN" and "uv sync" in i["value"]]
    for n in syncs:
        if "--frozen" not in code[n]["value"] and "--locked" not in code[n]["value"]:
            problems.append(f"line {code[n]['startline'] + 1}: `uv sync` without --frozen may re-resolve")
    if any(
        i["instruction"] == "RUN" and re.search(r"\bpip3? install\b|uv pip install|uv lock", i["value"]) for i in code
    ):
        problems.append("dependencies must come from uv.lock (uv sync), not pip install / uv lock")
    dep_syncs = [n for n in syncs if "--no-install-project" in code[n]["value"]]
    if not dep_syncs:
        problems.append("no dependency layer: `uv sync --frozen --no-install-project` is missing")
    else:
        dep = dep_syncs[0]
        if "--no-dev" not in code[dep]["value"]:
            problems.append("the dependency layer installs dev dependencies (add --no-dev)")
        copies_before = [i for i in code[:dep] if i["instruction"] in ("COPY", "ADD") and "--from=" not in i["value"]]
        sources = {w for i in copies_before for w in _words(i)[:-1] if not w.startswith("--")}
        if not {"pyproject.toml", "uv.lock"} <= sources:
            problems.append("pyproject.toml and uv.lock must be copied before the dependency layer")
        extra = sorted(sources - {"pyproject.toml", "uv.lock"})
        if extra:
            problems.append(f"only pyproject.toml and uv.lock belong before the dependency layer, not {extra}")
        later_copies = [i for i in code[dep + 1 :] if i["instruction"] in ("COPY", "ADD")]
        copied = {w.rstrip("/") for i in later_copies for w in _words(i)[:-1] if not w.startswith("--")}
        if "." not in copied:
            missing = [p for p in packages if p not in copied]
            if missing:
                problems.append(f"packages not copied into the image: {missing}")
        if not any(n > dep and "--no-install-project" not in code[n]["value"] for n in syncs):
            problems.append("the project itself is never installed (a final `uv sync --frozen` after the code)")

    for instr in code:
        if instr["instruction"] in ("ENV", "ARG"):
            names = _env_pairs(instr) if instr["instruction"] == "ENV" else {w.split("=")[0]: "" for w in _words(instr)}
            for name in names:
                if SECRET_NAME.search(name):
                    problems.append(
                        f"{instr['instruction']} {name}: secrets belong in the runtime environment, not the image"
                    )

    users = [i for i in code if i["instruction"] == "USER"]
    start = [n for n, k in enumerate(kinds) if k in ("CMD", "ENTRYPOINT")]
    if not users:
        problems.append("no USER: the image would run as root")
    else:
        last_user = users[-1]["value"].split(":")[0].strip()
        if last_user in ("root", "0"):
            problems.append("the last USER is root")
        if start and kinds.index("USER") > start[0]:
            problems.append("USER must come before CMD/ENTRYPOINT")

    cmds = [i for i in code if i["instruction"] == "CMD"]
    if not cmds or "gpu-consumer" not in cmds[-1]["value"]:
        problems.append("the default command must be the GPU consumer")

    checks = [n for n, i in enumerate(instructions) if i["instruction"] == "HEALTHCHECK"]
    if not checks:
        problems.append("no HEALTHCHECK (or HEALTHCHECK NONE with the reason in a comment)")
    for n in checks:
        if instructions[n]["value"].strip().upper() == "NONE" and (
            n == 0 or instructions[n - 1]["instruction"] != "COMMENT"
        ):
            problems.append("HEALTHCHECK NONE needs a comment right above it saying why")

    env: dict[str, str] = {}
    for instr in code:
        if instr["instruction"] == "ENV":
            env.update(_env_pairs(instr))
    volumes = [v for i in code if i["instruction"] == "VOLUME" for v in re.findall(r"/[^\s\"',\]]*", i["value"])]
    hf_home = env.get("HF_HOME")
    if not hf_home:
        problems.append("ENV HF_HOME is not set (the model cache must live on a volume)")
    elif not any(hf_home == v or hf_home.startswith(v.rstrip("/") + "/") for v in volumes):
        problems.append(f"HF_HOME={hf_home} is not on a VOLUME {volumes}")
    if not any(v == "/models" for v in volumes):
        problems.append("no VOLUME for MODEL_PATH checkpoints (/models)")
    return problems


def project_packages() -> list[str]:
    """The packages pyproject.toml builds into the wheel."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return list(pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"])


def project_python() -> str:
    """The lowest Python minor version pyproject.toml allows (the image's Python)."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    match = re.search(r">=\s*(\d+\.\d+)", pyproject["project"]["requires-python"])
    assert match, pyproject["project"]["requires-python"]
    return match.group(1)
