"""Storage keys: the one place the object layout that services share is spelled.

Services meet only through Kafka topics and storage, so the layout is part of the contract, like topic
names. Layout:

    inputs/{task_id}/{role}.{ext}        audio sent inline with a request (source, reference)
    inputs/uploads/{owner}/{id}.{ext}    audio uploaded with POST /uploads, passed back by key
    outputs/{task_id}/take-{n}.{ext}     results, the only prefix served by GET /files
    datasets/{task_id}.zip               LoRA training zips
    checkpoints/{task_id}/state.pt       a training job's latest checkpoint
    checkpoints/{task_id}/outcome.json   a training job's final event, republished on redelivery
    outputs/{task_id}/audio-codes.txt    the audio codes the 5 Hz LM wrote for a task
    plans/{task_id}/forward.json         a planned task's forwarded request (republished on redelivery)
    loras/{lora_id}/...                  trained adapters; manifest.json written last
    attempts/{stage}/{task_id}.json      a job's attempts per stage (poison-job detection)
"""

from __future__ import annotations

from typing import Final

INPUTS: Final = "inputs/"
OUTPUTS: Final = "outputs/"
DATASETS: Final = "datasets/"
CHECKPOINTS: Final = "checkpoints/"
LORAS: Final = "loras/"
PLANS: Final = "plans/"
ATTEMPTS: Final = "attempts/"

MANIFEST: Final = "manifest.json"
"""File name of an adapter's manifest; its presence means the adapter is complete."""
LORA_WEIGHTS: Final = "pytorch_lora_weights.safetensors"
"""File name of an adapter's weights (diffusers' LoRA format)."""


def input_stem(task_id: str, role: str) -> str:
    """Key without extension of audio sent inline with a request (`role`: source or reference)."""
    return f"{INPUTS}{task_id}/{role}"


def upload_prefix(owner_tag: str) -> str:
    """Prefix of one owner's uploads (`owner_tag`: a fixed-length digest of the owner, chosen by the gateway)."""
    return f"{INPUTS}uploads/{owner_tag}/"


def output_key(task_id: str, take: int, extension: str) -> str:
    """Key of one result take (`take` from 0)."""
    return f"{OUTPUTS}{task_id}/take-{take}.{extension}"


def dataset_key(task_id: str) -> str:
    """Key of an uploaded training zip."""
    return f"{DATASETS}{task_id}.zip"


def checkpoint_prefix(task_id: str) -> str:
    """Prefix of a training job's state."""
    return f"{CHECKPOINTS}{task_id}/"


def checkpoint_key(task_id: str) -> str:
    """Key of a training job's latest checkpoint."""
    return f"{checkpoint_prefix(task_id)}state.pt"


def outcome_key(task_id: str) -> str:
    """Key of a training job's final event, kept so a redelivery republishes it instead of retraining."""
    return f"{checkpoint_prefix(task_id)}outcome.json"


def lora_prefix(lora_id: str) -> str:
    """Prefix of one adapter's files."""
    return f"{LORAS}{lora_id}/"


def lora_file_key(lora_id: str, name: str) -> str:
    """Key of one file of an adapter."""
    return f"{lora_prefix(lora_id)}{name}"


def manifest_key(lora_id: str) -> str:
    """Key of an adapter's manifest."""
    return lora_file_key(lora_id, MANIFEST)


def attempts_key(task_id: str, stage: str) -> str:
    """Key of a task's attempt record at one stage (planning, generation, training): each start, how it ended."""
    return f"{ATTEMPTS}{stage}/{task_id}.json"


def task_file_prefixes(task_id: str) -> tuple[str, ...]:
    """Prefixes of every file kept about one task (`DELETE /tasks/{id}` on a final task removes them)."""
    return (
        f"{OUTPUTS}{task_id}/",
        f"{INPUTS}{task_id}/",
        f"{PLANS}{task_id}/",
        checkpoint_prefix(task_id),
        dataset_key(task_id),
    )


def audio_codes_key(task_id: str) -> str:
    """Key of the audio codes the LM wrote for a task (text; served with the task's outputs)."""
    return f"{OUTPUTS}{task_id}/audio-codes.txt"


def forward_key(task_id: str) -> str:
    """Key of a planned task's forwarded request (republished as is on redelivery)."""
    return f"{PLANS}{task_id}/forward.json"
