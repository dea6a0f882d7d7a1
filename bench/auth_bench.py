"""What API keys and admission control cost: POST /generate throughput with AUTH_MODE=keys vs AUTH_MODE=off.

Starts the embedded Tansu broker and two gateway processes on it (`acefarm gateway`), one with keys (a key
created through the key topic, limits high enough never to refuse, so every check runs and passes) and
one without, then runs wrk (Debian package `wrk`) at 32 connections against each in alternating rounds
(off, keys, keys, off, ...), so load from other work on the machine falls on both alike. Prints req/s,
p50 and p99 per round, the medians, and the keys/off ratios; the issue asks the key check to cost under
10 % of the throughput. Because wrk's figures swing with other load on a shared machine, it also times
the per-request work auth adds in process (finding the key, one SHA-256, the admission checks) and
prints it as a share of one request's time at the measured throughput.

Usage: uv run python bench/auth_bench.py [--rounds 6] [--seconds 10] [--connections 32]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import timeit
from pathlib import Path

from pipeline_bench import submit_throughput, wait_ready

from acefarm.devtools.broker import EmbeddedBroker, free_port
from acefarm.devtools.keys_cli import publish_key
from acefarm.infra.kafka import ensure_topics
from acefarm.infra.settings import Settings
from gateway.admission import Admission
from gateway.auth import AuthMode, resolve_principal
from gateway.keyring import KeyRing
from gateway.limits import UnfinishedJobs, generation_cost
from schemas.keys import ApiKeyRecord, KeyLimits
from schemas.tenancy import Priority

NEVER_REFUSED = KeyLimits(requests_per_s=1e9, burst=10**9, max_unfinished=10**9)


def start_gateway(bootstrap: str, port: int, workdir: Path, auth_mode: str) -> subprocess.Popen[bytes]:
    """Run `acefarm gateway` on `port` with `auth_mode` against `bootstrap`."""
    env = dict(
        os.environ,
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        OUTPUT_DIR=str(workdir),
        LOG_LEVEL="WARNING",
        AUTH_MODE=auth_mode,
        LINK_SIGNING_SECRET="b" * 48,
    )
    return subprocess.Popen([sys.executable, "-m", "acefarm", "gateway", "--port", str(port)], env=env)


async def create_key(bootstrap: str) -> str:
    """A key with limits that never refuse, published on the key topic; its secret."""
    settings = Settings(kafka_bootstrap_servers=bootstrap)
    await ensure_topics(settings)
    record, secret = ApiKeyRecord.issue("bench", limits=NEVER_REFUSED)
    await publish_key(settings, record)
    return secret


def added_check_us(iterations: int = 100_000) -> tuple[float, float]:
    """Microseconds per request of resolving the caller and admitting a job: (keys, off)."""
    settings = Settings(auth_mode="keys")
    ring = KeyRing(settings)  # not started: the record is folded in by hand, as the topic reader would
    record, secret = ApiKeyRecord.issue("bench", limits=NEVER_REFUSED)
    ring.table.apply(record.key_id.encode(), record.to_bytes())
    loaded = asyncio.Event()
    loaded.set()
    admission = Admission(settings, UnfinishedJobs(), loaded)
    cost = generation_cost(1.0, 1, 8)
    timings = []
    for mode, headers in (("keys", {"authorization": f"Bearer {secret}"}), ("off", {})):

        def one(mode: AuthMode = mode, headers: dict[str, str] = headers) -> None:
            principal = resolve_principal(headers, mode, ring)
            with admission.admit_job(principal, cost, Priority.NORMAL):
                pass

        timings.append(timeit.timeit(one, number=iterations) / iterations * 1e6)
    return timings[0], timings[1]


def main() -> None:
    """Run the alternating rounds and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="acefarm-auth-bench-"))
    broker = EmbeddedBroker().start()
    gateways: list[subprocess.Popen[bytes]] = []
    try:
        bootstrap = broker.bootstrap_servers
        secret = asyncio.run(create_key(bootstrap))
        urls: dict[str, str] = {}
        for mode in ("off", "keys"):
            port = free_port()
            gateways.append(start_gateway(bootstrap, port, workdir / mode, mode))
            urls[mode] = f"http://127.0.0.1:{port}"
        for url in urls.values():
            wait_ready(url)
        headers = {"off": {}, "keys": {"Authorization": f"Bearer {secret}"}}
        for mode, url in urls.items():  # warm-up: connections, producer metadata, first batches
            submit_throughput(url, 2, args.connections, headers[mode])
        results: dict[str, list[dict[str, float]]] = {"off": [], "keys": []}
        for n in range(args.rounds):
            for mode in ("off", "keys") if n % 2 == 0 else ("keys", "off"):
                figures = submit_throughput(urls[mode], args.seconds, args.connections, headers[mode])
                if figures["non_2xx"]:
                    raise SystemExit(f"{mode}: {figures['non_2xx']:.0f} requests were refused; the figures would lie")
                results[mode].append(figures)
                print(
                    f"round {n + 1} auth {mode:4}: {figures['rps']:7.0f} req/s  p50 {figures['p50_ms']:6.1f} ms  "
                    f"p99 {figures['p99_ms']:6.1f} ms",
                    flush=True,
                )
        medians = {
            mode: {k: statistics.median(r[k] for r in rounds) for k in ("rps", "p50_ms", "p99_ms")}
            for mode, rounds in results.items()
        }
        ratios = [keys["rps"] / off["rps"] for keys, off in zip(results["keys"], results["off"], strict=True)]
        for mode, m in medians.items():
            print(f"median auth {mode:4}: {m['rps']:7.0f} req/s  p50 {m['p50_ms']:6.1f} ms  p99 {m['p99_ms']:6.1f} ms")
        keys_us, off_us = added_check_us()
        request_us = 1e6 / medians["off"]["rps"]
        print(
            f"in process: key check + admission {keys_us:.1f} us per request with keys, {off_us:.1f} us off; "
            f"the difference is {(keys_us - off_us) / request_us:.2%} of a request's {request_us:.0f} us "
            "at the median auth-off throughput"
        )
        print(
            f"keys/off throughput: median of medians {medians['keys']['rps'] / medians['off']['rps']:.3f}, "
            f"per round {', '.join(f'{r:.3f}' for r in ratios)}; "
            f"p50 keys/off {medians['keys']['p50_ms'] / medians['off']['p50_ms']:.3f}"
        )
    finally:
        for process in gateways:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=30)
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
