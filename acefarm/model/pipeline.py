"""Load diffusers' `AceStepPipeline` once, as the settings say; shared by the GPU consumer and trainer.

Source: `MODEL_PATH` (a local diffusers-format directory, loaded with no network access) else the Hub
model `MODEL_ID` at `MODEL_REVISION`, with `HF_TOKEN` and the cache under `HF_HOME`. Device and
dtype default to CUDA/bf16 when a GPU is present, else CPU/fp32.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from acefarm.infra.settings import Settings
from schemas.generation import STEM_TASKS, TaskType

if TYPE_CHECKING:
    import torch

AceStepPipeline = Any
"""diffusers' `AceStepPipeline` (typed loosely: diffusers' lazy modules defeat mypy)."""

CAPABILITIES_FILE = "acefarm.json"
"""Optional file in a checkpoint directory: `{"supported_tasks": [...], "unsupported": {task: reason}}`."""

_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


@dataclass(frozen=True)
class TaskSupport:
    """Which task types a checkpoint can run, with a reason for each one it cannot."""

    supported: frozenset[TaskType]
    reasons: dict[TaskType, str] = field(default_factory=dict)
    cover_from_source: bool = True
    """Cover with `src_audio` needs the checkpoint's 5 Hz audio tokenizer/detokenizer."""

    def to_json(self) -> dict[str, Any]:
        """The record stored as `acefarm.json`."""
        return {
            "supported_tasks": sorted(t.value for t in self.supported),
            "unsupported": {t.value: r for t, r in self.reasons.items()},
            "cover_from_source": self.cover_from_source,
        }


def task_support(*, turbo: bool, audio_tokenizer: bool) -> TaskSupport:
    """ACE-Step 1.5's rules: the stem tasks (extract, lego, complete) need a base/SFT checkpoint."""
    supported = {TaskType.TEXT2MUSIC, TaskType.COVER, TaskType.REPAINT, TaskType.EXTEND}
    reasons: dict[TaskType, str] = {}
    for task in sorted(STEM_TASKS):
        if turbo:
            reasons[task] = f"'{task.value}' needs an ACE-Step 1.5 base or SFT checkpoint; the loaded one is turbo"
        else:
            supported.add(task)
    return TaskSupport(frozenset(supported), reasons, cover_from_source=audio_tokenizer)


def read_task_support(pipe: AceStepPipeline, model_dir: Path | None) -> TaskSupport:
    """Task support from the checkpoint's `acefarm.json` when present, else from its config."""
    derived = task_support(
        turbo=bool(pipe.is_turbo),
        audio_tokenizer=pipe.audio_tokenizer is not None and pipe.audio_token_detokenizer is not None,
    )
    record_path = model_dir / CAPABILITIES_FILE if model_dir else None
    if record_path is None or not record_path.is_file():
        return derived
    record = json.loads(record_path.read_text())
    supported = frozenset(TaskType(t) for t in record.get("supported_tasks", []))
    reasons = {TaskType(t): str(r) for t, r in record.get("unsupported", {}).items()}
    for task in TaskType:
        if task not in supported:
            reasons.setdefault(task, f"the checkpoint at {model_dir} does not support '{task.value}'")
    return TaskSupport(supported, reasons, derived.cover_from_source)


@dataclass
class PipelineInfo:
    """What was loaded, from where, onto what."""

    source: str
    local: bool
    revision: str | None
    device: str
    dtype: str
    cpu_offload: bool
    compiled: bool
    vae_tiling: bool
    turbo: bool
    sample_rate: int
    components: dict[str, str]
    parameters: int
    size_bytes: int
    load_seconds: float
    tasks: TaskSupport

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly view (for logs and `acefarm models info`)."""
        data = asdict(self)
        data["tasks"] = self.tasks.to_json()
        return data


def resolve_device(setting: str) -> str:
    """`auto` → `cuda` when a GPU is visible, else `cpu`; anything else is returned as given."""
    import torch

    if setting.strip().lower() != "auto":
        return setting.strip()
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(setting: str, device: str) -> torch.dtype:
    """`auto` → bfloat16 on CUDA, float32 elsewhere; otherwise the named torch dtype."""
    import torch

    if setting == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    dtype: torch.dtype = getattr(torch, _DTYPES[setting])
    return dtype


def model_source(settings: Settings) -> tuple[str, bool]:
    """(path or Hub id, is_local): `MODEL_PATH` wins over `MODEL_ID`."""
    if settings.model_path is not None:
        return str(settings.model_path), True
    return settings.model_id, False


def hub_cache_dir(settings: Settings) -> str | None:
    """The Hub cache directory under `HF_HOME` (None: huggingface_hub's default)."""
    return str(settings.hf_home / "hub") if settings.hf_home else None


def load_pipeline(settings: Settings, *, device: str | None = None) -> tuple[AceStepPipeline, PipelineInfo]:
    """Load ACE-Step 1.5 as configured and place it on its device; returns the pipeline and its info.

    Raises `FileNotFoundError` when `MODEL_PATH` is not a diffusers-format directory.
    """
    from diffusers import AceStepPipeline as PipelineClass

    started = time.perf_counter()
    source, local = model_source(settings)
    target = resolve_device(device or settings.device)
    dtype = resolve_dtype(settings.dtype, target)
    if local:
        if not (Path(source) / "model_index.json").is_file():
            raise FileNotFoundError(
                f"MODEL_PATH={source} is not a diffusers-format ACE-Step 1.5 directory (no model_index.json); "
                "run `acefarm models download` or `acefarm models make-tiny DIR`"
            )
        pipe = PipelineClass.from_pretrained(source, dtype=dtype, local_files_only=True)
    else:
        token = settings.hf_token.get_secret_value() if settings.hf_token else None
        pipe = PipelineClass.from_pretrained(
            source, dtype=dtype, revision=settings.model_revision, token=token, cache_dir=hub_cache_dir(settings)
        )
    pipe.set_progress_bar_config(disable=True)
    offload = settings.cpu_offload and target.startswith("cuda")
    if offload:
        pipe.enable_model_cpu_offload(device=target)
    else:
        pipe.to(target)
    if settings.vae_tiling:
        pipe.vae.enable_tiling()
    if settings.torch_compile:
        pipe.transformer.compile()
    info = PipelineInfo(
        source=source,
        local=local,
        revision=None if local else settings.model_revision,
        device=target,
        dtype=str(dtype).removeprefix("torch."),
        cpu_offload=offload,
        compiled=settings.torch_compile,
        vae_tiling=settings.vae_tiling,
        turbo=bool(pipe.is_turbo),
        sample_rate=int(pipe.sample_rate),
        components=component_classes(pipe),
        parameters=sum(p.numel() for p in _modules_parameters(pipe)),
        size_bytes=sum(p.numel() * p.element_size() for p in _modules_parameters(pipe)),
        load_seconds=round(time.perf_counter() - started, 3),
        tasks=read_task_support(pipe, Path(source) if local else None),
    )
    return pipe, info


def component_classes(pipe: AceStepPipeline) -> dict[str, str]:
    """Component name → class name for every registered component that is present."""
    return {name: type(module).__name__ for name, module in pipe.components.items() if module is not None}


def _modules_parameters(pipe: AceStepPipeline) -> list[torch.nn.Parameter]:
    import torch

    params: list[torch.nn.Parameter] = []
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            params.extend(module.parameters())
    return params
