"""`acefarm dev`: supervise an embedded broker and one process per service in this terminal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from types import FrameType

from acefarm.devtools.broker import EmbeddedBroker
from acefarm.infra.logging import configure_logging, get_logger
from acefarm.infra.settings import Settings

log = get_logger("acefarm.dev")

EMBEDDED_BROKER_ENV = {
    # Defaults for the embedded broker (fetch waits: acefarm/infra/settings.py FETCH_MAX_WAIT_MS).
    "KAFKA_BROKER_KIND": "embedded",
    # The embedded broker makes a group join wait about the rebalance timeout: keep it short locally.
    "KAFKA_SESSION_TIMEOUT_MS": "6000",
    "KAFKA_REBALANCE_TIMEOUT_MS": "3000",
    "KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
}
STOP_GRACE_S = 15.0


@dataclass
class Child:
    """One supervised service process."""

    name: str
    process: subprocess.Popen[bytes]


def _has_cached_weights(settings: Settings) -> bool:
    """Whether the configured Hugging Face model is already in the local cache."""
    try:
        from huggingface_hub import try_to_load_from_cache

        cache_dir = str(settings.hf_home / "hub") if settings.hf_home else None
        found = try_to_load_from_cache(
            settings.model_id, "model_index.json", cache_dir=cache_dir, revision=settings.model_revision
        )
        return isinstance(found, str)
    except Exception:  # pragma: no cover - any cache trouble means "not cached"
        return False


def resolve_model(settings: Settings, env: dict[str, str]) -> None:
    """Choose the checkpoint for the dev stack, building a tiny random one when no weights exist.

    MODEL_PATH wins; then cached weights of MODEL_ID; otherwise a tiny random checkpoint (its audio is
    noise) is built under OUTPUT_DIR/models/tiny and the log says how to get real weights.
    """
    if settings.engine != "acestep" or settings.model_path is not None or _has_cached_weights(settings):
        return
    tiny = (settings.output_dir / "models" / "tiny").resolve()
    log.warning(
        "dev.no_weights",
        model_id=settings.model_id,
        using=str(tiny),
        hint="Real weights: `uv run acefarm models download` (or set MODEL_PATH to a diffusers-format "
        "ACE-Step 1.5 directory). Until then the tiny random checkpoint produces noise.",
    )
    if not (tiny / "model_index.json").exists():
        subprocess.run([sys.executable, "-m", "acefarm", "models", "make-tiny", str(tiny)], check=True, env=env)
    env["MODEL_PATH"] = str(tiny)


def _start(name: str, module: str, args: list[str], env: dict[str, str]) -> Child:
    log.info("dev.start", service=name)
    # A session of its own: Ctrl-C reaches only this supervisor, which stops services before the broker.
    return Child(name, subprocess.Popen([sys.executable, "-m", module, *args], env=env, start_new_session=True))


def _stop_all(children: list[Child]) -> None:
    for child in reversed(children):
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for child in reversed(children):
        remaining = max(0.1, deadline - time.monotonic())
        try:
            child.process.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            log.warning("dev.kill", service=child.name)
            child.process.kill()
            child.process.wait()


def run_dev(*, host: str, port: int, with_trainer: bool) -> int:
    """Run the local stack until Ctrl-C or a service exits; returns the exit code."""
    settings = Settings()
    configure_logging("dev", settings.log_level, settings.log_format)
    env = dict(os.environ)
    broker: EmbeddedBroker | None = None
    if "kafka_bootstrap_servers" not in settings.model_fields_set:  # neither the environment nor .env sets it
        broker = EmbeddedBroker().start()
        env["KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap_servers
        for key, value in EMBEDDED_BROKER_ENV.items():
            env.setdefault(key, value)
        log.info("dev.broker", bootstrap_servers=broker.bootstrap_servers, storage="memory (lost on exit)")
    children: list[Child] = []
    stopping = False

    def on_signal(signum: int, _: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        resolve_model(settings, env)
        children.append(_start("streams", "streams", [], env))
        children.append(_start("gpu-consumer", "gpu_consumer", [], env))
        if with_trainer:
            children.append(_start("trainer", "trainer", [], env))
        children.append(_start("gateway", "gateway", ["--host", host, "--port", str(port)], env))
        log.info("dev.ready", url=f"http://{host}:{port}/", docs=f"http://{host}:{port}/docs")
        while not stopping:
            for child in children:
                code = child.process.poll()
                if code is not None:
                    log.error("dev.service_exited", service=child.name, code=code)
                    return code or 1
            time.sleep(0.2)
        return 0
    finally:
        log.info("dev.stopping")
        _stop_all(children)
        if broker is not None:
            broker.stop()
        log.info("dev.stopped")
