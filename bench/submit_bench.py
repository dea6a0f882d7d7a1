"""Submit throughput against its floor: the gateway's `POST /generate` (auth off, every 202 acknowledged by
the broker with acks=all) next to a bare Litestar route that answers 202 without Kafka (`floor_app.py`).

Starts the embedded Tansu broker, one `acefarm gateway` process per `--linger` value (`KAFKA_LINGER_MS`) and
the floor app, then runs wrk (Debian package `wrk`) at `--connections` against each in alternating rounds,
so load from other work on the shared machine falls on all alike. Prints each round with the load average,
the medians, and the gateway/floor ratios of throughput and p99 (the issue asks ≥ 0.6 and ≤ 2).

Usage: uv run python bench/submit_bench.py [--rounds 4] [--seconds 10] [--linger 0 1 2 5] [--before DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipeline_bench import submit_throughput, wait_ready

from acefarm.devtools.broker import EmbeddedBroker, free_port

HERE = Path(__file__).resolve().parent


def start_gateway(
    bootstrap: str, port: int, workdir: Path, linger_ms: int, source: Path | None = None
) -> subprocess.Popen[bytes]:
    """Run `acefarm gateway` with auth off and `KAFKA_LINGER_MS=linger_ms` on `port`, from the checkout at
    `source` when given (an older commit, for a before/after comparison in one run)."""
    extra = {"PYTHONPATH": str(source)} if source is not None else {}
    env = dict(
        os.environ,
        **extra,
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        KAFKA_BROKER_KIND="embedded",
        OUTPUT_DIR=str(workdir),
        LOG_LEVEL="WARNING",
        AUTH_MODE="off",
        KAFKA_LINGER_MS=str(linger_ms),
        MAX_QUEUED_JOBS="0",
    )
    return subprocess.Popen([sys.executable, "-m", "acefarm", "gateway", "--port", str(port)], env=env)


def wait_listening(port: int, timeout_s: float = 60.0) -> None:
    """Block until something accepts TCP connections on 127.0.0.1:`port`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing listens on {port}")


def load_average() -> float:
    """The 1-minute load average."""
    return os.getloadavg()[0]


def main() -> None:
    """Run the alternating rounds and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--linger", type=int, nargs="+", default=[0])
    parser.add_argument("--before", type=Path, help="also run a gateway from this checkout (e.g. a git worktree)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="acefarm-submit-bench-"))
    broker = EmbeddedBroker().start()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        urls: dict[str, str] = {}
        for linger in args.linger:
            port = free_port()
            processes.append(start_gateway(broker.bootstrap_servers, port, workdir / str(linger), linger))
            urls[f"gateway linger {linger}"] = f"http://127.0.0.1:{port}"
        if args.before is not None:
            port = free_port()
            processes.append(start_gateway(broker.bootstrap_servers, port, workdir / "before", 0, args.before))
            urls["gateway before"] = f"http://127.0.0.1:{port}"
        floor_port = free_port()
        processes.append(subprocess.Popen([sys.executable, str(HERE / "floor_app.py"), str(floor_port)]))
        urls["floor"] = f"http://127.0.0.1:{floor_port}"
        for name, url in urls.items():
            if name == "floor":
                wait_listening(floor_port)
            else:
                wait_ready(url)
            submit_throughput(url, 2, args.connections)  # warm-up
        results: dict[str, list[dict[str, float]]] = {name: [] for name in urls}
        names = list(urls)
        for n in range(args.rounds):
            for name in names if n % 2 == 0 else names[::-1]:
                load = load_average()
                figures = submit_throughput(urls[name], args.seconds, args.connections)
                if figures["non_2xx"]:
                    raise SystemExit(f"{name}: {figures['non_2xx']:.0f} requests were refused; the figures would lie")
                results[name].append(figures)
                print(
                    f"round {n + 1} {name:18}: {figures['rps']:7.0f} req/s  p50 {figures['p50_ms']:6.1f} ms  "
                    f"p99 {figures['p99_ms']:6.1f} ms  (load {load:.1f})",
                    flush=True,
                )
        floor = results["floor"]
        for name, rounds in results.items():
            med = {k: statistics.median(r[k] for r in rounds) for k in ("rps", "p50_ms", "p99_ms")}
            line = f"median {name:18}: {med['rps']:7.0f} req/s  p50 {med['p50_ms']:6.1f} ms  p99 {med['p99_ms']:6.1f}"
            if name != "floor":
                rps = [r["rps"] / f["rps"] for r, f in zip(rounds, floor, strict=True)]
                p99 = [r["p99_ms"] / f["p99_ms"] for r, f in zip(rounds, floor, strict=True)]
                line += (
                    f"  | /floor: throughput median {statistics.median(rps):.2f} ({', '.join(f'{x:.2f}' for x in rps)})"
                    f", p99 median {statistics.median(p99):.2f} ({', '.join(f'{x:.2f}' for x in p99)})"
                )
            print(line)
    finally:
        for process in processes:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=30)
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
