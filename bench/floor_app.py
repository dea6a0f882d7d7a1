"""The submit floor: a bare Litestar `POST /generate` that decodes the JSON body and answers 202, no Kafka.

Served by uvicorn with the gateway's own options (`gateway.server.uvicorn_config`: httptools, uvloop, no
access log), so `submit_bench.py` compares the gateway's whole submit path against the framework alone.

Usage: uv run python bench/floor_app.py PORT
"""

from __future__ import annotations

import sys
import uuid
from typing import Any

import uvicorn
from litestar import Litestar, post
from litestar.status_codes import HTTP_202_ACCEPTED


@post("/generate", status_code=HTTP_202_ACCEPTED)
async def generate(data: dict[str, Any]) -> dict[str, str]:
    """Accept any JSON object; answer with a fresh task id."""
    return {"task_id": uuid.uuid4().hex, "status": "pending"}


def main() -> None:
    """Serve the floor app on 127.0.0.1:PORT."""
    app = Litestar(route_handlers=[generate], logging_config=None)
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_config=None, access_log=False, lifespan="on")


if __name__ == "__main__":
    main()
