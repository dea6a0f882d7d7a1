"""`python -m trainer [--device cuda:0]`: one LoRA trainer process (one per GPU)."""

from __future__ import annotations

import argparse
import os

from acefarm.infra.settings import Settings
from trainer.service import DEFAULT_GRACE_S, run_trainer


def main(argv: list[str] | None = None) -> None:
    """Parse the options, apply them to the settings, and run the trainer."""
    parser = argparse.ArgumentParser(prog="trainer", description="Run one acefarm LoRA trainer (one per GPU).")
    parser.add_argument("--device", help="Device for training, e.g. cuda:0 or cpu (sets DEVICE).")
    parser.add_argument(
        "--grace",
        type=float,
        default=DEFAULT_GRACE_S,
        help="Seconds a running job may take after SIGTERM to checkpoint and stop before it is abandoned.",
    )
    args = parser.parse_args(argv)
    if args.device:
        os.environ["DEVICE"] = args.device
    run_trainer(Settings(), grace_s=args.grace)


if __name__ == "__main__":
    main()
