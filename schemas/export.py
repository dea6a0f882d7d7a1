"""Export the contract as JSON Schema files for other teams: `python -m schemas.export [DIR]`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import BaseModel

from schemas.events import EVENT_MODELS
from schemas.generation import GenerateRequest
from schemas.keys import ApiKeyRecord
from schemas.pools import ModelList
from schemas.queues import QueueSnapshot
from schemas.status import TaskAccepted, TaskList, TaskStatusResponse, WebhookPayload
from schemas.training import LoraManifest, TrainingOptions
from schemas.workers import WorkerHeartbeat

DEFAULT_DIR = Path(__file__).parent / "jsonschema"

API_MODELS: tuple[type[BaseModel], ...] = (
    GenerateRequest,
    TaskAccepted,
    TaskStatusResponse,
    TaskList,
    TrainingOptions,
    LoraManifest,
    QueueSnapshot,
    WebhookPayload,
    ModelList,
)

RECORD_MODELS: tuple[type[BaseModel], ...] = (ApiKeyRecord, WorkerHeartbeat)
"""Records on Kafka that are not task events."""


def schema_documents() -> dict[str, str]:
    """File name → JSON Schema text, for every event, record and API body."""
    docs: dict[str, str] = {}
    for model in (*EVENT_MODELS, *RECORD_MODELS, *API_MODELS):
        schema = model.model_json_schema(mode="validation")
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        schema["$id"] = f"https://acefarm.dev/schemas/{model.__name__}.json"
        docs[f"{model.__name__}.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return docs


def export(directory: Path = DEFAULT_DIR) -> list[Path]:
    """Write every schema into `directory`, removing stale files; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    docs = schema_documents()
    for stale in directory.glob("*.json"):
        if stale.name not in docs:
            stale.unlink()
    written = []
    for name, text in docs.items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DIR
    for path in export(target):
        print(path)
