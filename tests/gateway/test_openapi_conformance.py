"""The OpenAPI document matches behaviour: schemathesis (all checks) against the real gateway on the test broker.

CI keeps it short (`SCHEMATHESIS_MAX_EXAMPLES`, default 5 per operation); bench/ documents a longer run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

MAX_EXAMPLES = os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "5")


async def test_booleans_are_not_numbers(client: httpx.AsyncClient) -> None:
    response = await client.post("/generate", json={"prompt": "a tone", "duration": True})
    assert response.status_code == 400 and "duration" in response.json()["detail"]
    assert (await client.post("/generate", json={"prompt": "a tone", "duration": 10})).status_code == 202


async def test_the_document_declares_what_the_gateway_does(client: httpx.AsyncClient) -> None:
    doc = (await client.get("/schema/openapi.json")).json()
    schemas = doc["components"]["schemas"]
    assert schemas["GenerateRequest"]["additionalProperties"] is False
    assert schemas["LoraUpdate"]["additionalProperties"] is False
    assert schemas["TrainLoraForm"]["properties"]["style_name"]["maxLength"] == 100
    events = doc["paths"]["/tasks/{task_id}/events"]["get"]["responses"]["200"]["content"]
    assert list(events) == ["text/event-stream"]


@pytest.mark.xfail(
    strict=True,
    reason="open (issue 11 item 6): schemathesis still reports ST202 (schema-valid uploads/forms refused: the "
    "document does not say a file must be audio), ST108 (SSE events vs the string schema) and ST205 (OPTIONS "
    "on /loras/{id} answers Allow: DELETE, OPTIONS only)",
)
def test_schemathesis_finds_no_failures(gateway_url: str, tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
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
    run = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
