"""Store a trained adapter under `loras/{lora_id}/`: the weights first, `manifest.json` last."""

from __future__ import annotations

from acefarm.infra.storage import Storage
from schemas.events import TrainingRequested, utcnow
from schemas.storage_keys import LORA_WEIGHTS, lora_prefix, manifest_key
from schemas.training import LoraManifest
from trainer.run import TrainingOutput


async def store_lora(
    storage: Storage,
    request: TrainingRequested,
    output: TrainingOutput,
    *,
    base_model: str,
    base_revision: str | None,
) -> LoraManifest:
    """Upload the adapter files, then the manifest (which marks the LoRA finished); returns the manifest."""
    prefix = lora_prefix(request.lora_id)
    for path in sorted(output.adapter_dir.iterdir()):
        if path.is_file():
            content_type = "application/octet-stream" if path.name == LORA_WEIGHTS else "application/json"
            await storage.put_file(prefix + path.name, path, content_type)
    manifest = LoraManifest(
        lora_id=request.lora_id,
        style_name=request.style_name,
        base_model=base_model,
        base_model_revision=base_revision,
        options=request.options,
        tracks=output.tracks,
        final_loss=output.result.final_loss,
        steps_done=output.result.steps,
        created_at=utcnow(),
        task_id=request.task_id,
        owner=request.owner,
    )
    await storage.put_bytes(
        manifest_key(request.lora_id), manifest.model_dump_json(indent=2).encode(), "application/json"
    )
    return manifest
