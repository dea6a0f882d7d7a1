"""`python -m gpu_consumer [--device cuda:0]`: one GPU consumer process."""

from __future__ import annotations

import argparse
import os

from acefarm.infra.settings import Settings
from gpu_consumer.consumer import DEFAULT_GRACE_S, run_consumer


def main(argv: list[str] | None = None) -> None:
    """Parse the options, apply them to the settings, and run the consumer."""
    parser = argparse.ArgumentParser(prog="gpu_consumer", description="Run one acefarm GPU consumer (one per GPU).")
    parser.add_argument("--device", help="Device for the engine, e.g. cuda:0 or cpu (sets DEVICE).")
    parser.add_argument(
        "--grace",
        type=float,
        default=DEFAULT_GRACE_S,
        help="Seconds a running job may finish after SIGTERM before it is left uncommitted.",
    )
    parser.add_argument(
        "--static-membership",
        action="store_true",
        help="Join with group.instance.id = WORKER_ID: quick restarts cause no rebalance.",
    )
    args = parser.parse_args(argv)
    if args.device:
        os.environ["DEVICE"] = args.device
    settings = Settings()
    if args.static_membership and not settings.worker_id:
        parser.error("--static-membership needs a stable WORKER_ID")
    run_consumer(settings, grace_s=args.grace, static_membership=args.static_membership)


if __name__ == "__main__":
    main()
