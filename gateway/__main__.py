"""`python -m gateway [--host HOST] [--port PORT]`: run the gateway with uvicorn."""

from __future__ import annotations

import argparse

from acefarm.infra.settings import get_settings
from gateway.server import run_gateway


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and serve until SIGINT/SIGTERM."""
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m gateway", description="acefarm REST/SSE gateway")
    parser.add_argument("--host", default=settings.gateway_host, help="bind address (GATEWAY_HOST)")
    parser.add_argument("--port", type=int, default=settings.gateway_port, help="port (GATEWAY_PORT)")
    args = parser.parse_args(argv)
    run_gateway(settings, args.host, args.port)


if __name__ == "__main__":
    main()
