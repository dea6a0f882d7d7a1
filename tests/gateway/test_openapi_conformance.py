"""The OpenAPI document matches behaviour: schemathesis (all checks) against the real gateway on the test broker.

CI keeps it short (`SCHEMATHESIS_MAX_EXAMPLES`, default 5 per operation); bench/README.md documents a longer
run. Schemathesis fills the multipart file parts with real audio and a real dataset zip from the strategies
in tests/gateway/schemathesis_hooks.py, registered for the media types the document declares.

tests/gateway/schemathesis.toml adds 422 to the answers the positive-data check accepts, for the job
submissions only: they refuse with 422 (documented in their responses) what no schema can rule out: fields
valid one by one but not together (repaint_end > repaint_start, task types that need source audio), inline
base64 that does not decode to readable audio (`contentEncoding` only annotates), a key, LoRA or model the
farm does not have, an Idempotency-Key reused with another body (schemathesis draws few distinct header
values, so it reuses keys) and a webhook whose host does not resolve or is private. A schema-level error
stays 400. Every check stays on and every operation is tested.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

MAX_EXAMPLES = os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "5")
ROOT = Path(__file__).resolve().parents[2]
HOOKS = "tests.gateway.schemathesis_hooks"
CONFIG = Path(__file__).with_name("schemathesis.toml")


async def test_booleans_are_not_numbers(client: httpx.AsyncClient) -> None:
    response = await client.post("/generate", json={"prompt": "a tone", "duration": True})
    assert response.status_code == 400 and "duration" in response.json()["detail"]
    assert (await client.post("/generate", json={"prompt": "a tone", "duration": 10})).status_code == 202


FORMS = ("/uploads", "/train/lora")


async def test_the_document_declares_what_the_gateway_does(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/schema/openapi.json")).json()
    schemas = doc["components"]["schemas"]
    assert schemas["GenerateRequest"]["additionalProperties"] is False
    assert schemas["LoraUpdate"]["additionalProperties"] is False
    assert schemas["TrainLoraForm"]["properties"]["style_name"]["maxLength"] == 100
    events = doc["paths"]["/tasks/{task_id}/events"]["get"]["responses"]["200"]["content"]
    assert list(events) == ["text/event-stream"]
    event = events["text/event-stream"]["schema"]
    assert event["required"] == ["id", "event", "data"]
    assert event["properties"]["data"]["contentSchema"] == {"$ref": "#/components/schemas/TaskStatusResponse"}
    forms = {path: doc["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"] for path in FORMS}
    assert forms["/uploads"]["encoding"]["file"]["contentType"].startswith("audio/wav")
    assert forms["/train/lora"]["encoding"]["file"]["contentType"] == "application/zip"
    allow = (await client.options("/loras/any-id")).headers["allow"]
    assert set(allow.split(", ")) == {"GET", "PATCH", "DELETE", "OPTIONS"}


def test_schemathesis_finds_no_failures(gateway_url: str, tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(CONFIG),
        "run",
        f"{gateway_url}/schema/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        MAX_EXAMPLES,
        "--workers",
        "1",
        "--seed",
        "1",
        "--report-dir",
        str(tmp_path),
    ]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": HOOKS, "PYTHONPATH": str(ROOT)}
    run = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False, cwd=tmp_path, env=env)
    report = "\n".join(line[:300] for line in run.stdout.splitlines())  # reproductions quote whole files
    assert run.returncode == 0, report[-8000:] + run.stderr[-2000:]
