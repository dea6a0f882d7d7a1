"""`acefarm dev`: an embedded broker and one process per service in this terminal, each restarted when it exits;
with local storage, a periodic retention sweep."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from types import FrameType
from urllib.error import URLError
from urllib.request import urlopen

from acefarm.devtools.broker import EmbeddedBroker
from acefarm.infra.logging import configure_logging, get_logger
from acefarm.infra.settings import Settings
from acefarm.model.lm.loading import lm_available
from acefarm.runtime.service import EXIT_WEDGED

log = get_logger("acefarm.dev")

EMBEDDED_BROKER_ENV = {
    # Defaults for the embedded broker (fetch waits: acefarm/infra/settings.py FETCH_MAX_WAIT_MS).
    "KAFKA_BROKER_KIND": "embedded",
    # The embedded broker answers a member's first JoinGroup after about half its session timeout (measured:
    # 2000 → 1 s, 3000 → 2 s, 6000 → 3 s, 10000 → 5 s): keep it short locally, so a started or restarted
    # worker takes jobs within ~2 s and a killed one's partitions move within 3 s.
    "KAFKA_SESSION_TIMEOUT_MS": "3000",
    "KAFKA_REBALANCE_TIMEOUT_MS": "3000",
    "KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
}
DEV_WEBHOOKS = {
    # Local receivers (a script on this machine) are the usual webhook targets while developing.
    "webhook_allow_private": "true",
    "webhook_secret": "acefarm-dev-webhook-secret-not-for-production",
}
"""Webhook settings `acefarm dev` uses unless the environment or .env sets them."""
STOP_GRACE_S = 15.0
READY_POLL_S = 1.0
DEV_METRICS_PORTS = {"streams": 1, "gpu-consumer": 2, "trainer": 3, "scheduler": 4, "webhooks": 5}
"""With METRICS_PORT set, each worker serves metrics on METRICS_PORT + its offset (the gateway: /metrics)."""


RESTART_BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
"""Waits before restarting a service that exited, one more step for each exit in a row."""
STABLE_AFTER_S = 60.0
"""A service that ran this long before exiting is restarted after the first wait again."""
EXIT_REASONS = {
    EXIT_WEDGED: "a job passed its deadline (the worker restarts to shed it)",
    1: "crashed (see its log above)",
    -signal.SIGKILL: "killed (SIGKILL: out of memory?)",
}


@dataclass
class Child:
    """One supervised service process."""

    name: str
    args: list[str]
    process: subprocess.Popen[bytes]
    started_at: float = field(default_factory=time.monotonic)
    exits_in_a_row: int = 0
    restart_at: float | None = None
    """When an exited service is due to start again (None while it runs)."""


class Supervisor:
    """Starts `acefarm <args>` per service and restarts any that exits, with backoff, logging why."""

    def __init__(self, env: dict[str, str], command: tuple[str, ...] = (sys.executable, "-m", "acefarm")) -> None:
        self._env = env
        self._command = command
        self.children: list[Child] = []

    def start(self, name: str, args: list[str]) -> Child:
        """Start the service `name` as `<command> <args>` (`acefarm <args>` by default)."""
        child = Child(name, args, self._spawn(name, args))
        self.children.append(child)
        return child

    def check(self) -> None:
        """Notice services that exited (schedule their restart) and restart those that are due."""
        now = time.monotonic()
        for child in self.children:
            if child.restart_at is None:
                code = child.process.poll()
                if code is None:
                    continue
                ran_s = now - child.started_at
                child.exits_in_a_row = 1 if ran_s >= STABLE_AFTER_S else child.exits_in_a_row + 1
                wait_s = RESTART_BACKOFF_S[min(child.exits_in_a_row, len(RESTART_BACKOFF_S)) - 1]
                child.restart_at = now + wait_s
                reason = EXIT_REASONS.get(code, "exited")
                log.error("dev.service_exited", service=child.name, code=code, reason=reason, ran_s=round(ran_s, 1))
                log.info("dev.restarting", service=child.name, in_s=wait_s, exits_in_a_row=child.exits_in_a_row)
            elif now >= child.restart_at:
                child.process = self._spawn(child.name, child.args)
                child.started_at, child.restart_at = now, None

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log.info("dev.start", service=name)
        env = self._env
        if env.get("METRICS_PORT") and name in DEV_METRICS_PORTS:  # each service on a port of its own
            env = {**env, "METRICS_PORT": str(int(env["METRICS_PORT"]) + DEV_METRICS_PORTS[name])}
        # A session of its own: Ctrl-C reaches only this supervisor, which stops services before the broker.
        return subprocess.Popen([*self._command, *args], env=env, start_new_session=True)

    def stop_all(self) -> None:
        """SIGTERM every running service (last started first), SIGKILL those still up after `STOP_GRACE_S`."""
        running = [c for c in reversed(self.children) if c.process.poll() is None]
        for child in running:
            child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for child in running:
            remaining = max(0.1, deadline - time.monotonic())
            try:
                child.process.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                log.warning("dev.kill", service=child.name)
                child.process.kill()
                child.process.wait()


class PeriodicSweep:
    """Runs `acefarm storage sweep` every `interval_s` (never two at once): retention for local storage.

    The supervisor is the one process that runs exactly once wherever local storage is shared by the
    services, so the sweep lives here rather than in a service (S3 deploys use lifecycle rules instead).
    """

    def __init__(self, env: dict[str, str], interval_s: float, command: tuple[str, ...]) -> None:
        self._env = env
        self._interval_s = interval_s
        self._command = command
        self._next = time.monotonic()
        self._process: subprocess.Popen[bytes] | None = None

    def check(self) -> None:
        """Start a sweep when one is due and the previous one has finished."""
        if time.monotonic() < self._next or (self._process is not None and self._process.poll() is None):
            return
        self._next = time.monotonic() + self._interval_s
        self._process = subprocess.Popen([*self._command, "storage", "sweep"], env=self._env, start_new_session=True)

    def stop(self) -> None:
        """Stop a sweep still running."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait()


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


def consumer_joined(url: str) -> bool:
    """Whether the gateway at `url` lists an alive GPU consumer that has joined its group (`GET /workers`)."""
    try:
        with urlopen(f"{url}/workers", timeout=2) as response:
            body = json.load(response)
    except (URLError, OSError, ValueError):
        return False
    return any(w.get("kind") == "gpu-consumer" and w.get("joined") for w in body.get("workers", []))


def resolve_lm(settings: Settings, env: dict[str, str]) -> None:
    """Choose the 5 Hz LM for the dev stack: LM_MODEL_PATH, else cached LM_MODEL_ID, else a tiny random LM
    built under OUTPUT_DIR/models/tiny-lm (its plans are noise)."""
    if lm_available(settings):
        return
    built_with_dit = (settings.output_dir / "models" / "tiny" / "lm").resolve()  # `make-tiny` writes one there
    tiny = (
        built_with_dit
        if (built_with_dit / "config.json").exists()
        else (settings.output_dir / "models" / "tiny-lm").resolve()
    )
    log.warning(
        "dev.no_lm_weights",
        lm_model_id=settings.lm_model_id,
        using=str(tiny),
        hint="Real weights: `uv run acefarm models download --lm` (or set LM_MODEL_PATH).",
    )
    if not (tiny / "config.json").exists():
        subprocess.run([sys.executable, "-m", "acefarm", "models", "make-tiny-lm", str(tiny)], check=True, env=env)
    env["LM_MODEL_PATH"] = str(tiny)


def run_dev(*, host: str, port: int, with_trainer: bool, with_planner: bool = True) -> int:
    """Run the local stack (broker, streams, scheduler, webhooks, GPU consumer, planner, trainer, gateway) until Ctrl-C,
    restarting any service that exits (`Supervisor`); returns 0.

    "ready" is logged once the gateway lists a GPU consumer that has joined its group, so the first
    job does not wait for the consumer to join.
    """
    settings = Settings()
    configure_logging("dev", settings.log_level, settings.log_format)
    env = dict(os.environ)
    for name, value in DEV_WEBHOOKS.items():
        if name not in settings.model_fields_set:
            env[name.upper()] = value
    broker: EmbeddedBroker | None = None
    if "kafka_bootstrap_servers" not in settings.model_fields_set:  # neither the environment nor .env sets it
        broker = EmbeddedBroker().start()
        env["KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap_servers
        for key, value in EMBEDDED_BROKER_ENV.items():
            env.setdefault(key, value)
        log.info("dev.broker", bootstrap_servers=broker.bootstrap_servers, storage="memory (lost on exit)")
    if "auth_mode" not in settings.model_fields_set:  # neither the environment nor .env sets it
        env["AUTH_MODE"] = "off"
    if env.get("AUTH_MODE", settings.auth_mode) == "off":
        log.warning(
            "dev.auth_off",
            consequence="THE FARM IS OPEN: no API keys, every caller is an admin who sees, cancels and deletes "
            "everything; keep the port private",
            hint="turn keys on: AUTH_MODE=keys uv run acefarm dev, then `uv run acefarm keys create --owner NAME`",
        )
    supervisor = Supervisor(env)
    sweeper = None
    if settings.storage_backend == "local":
        sweeper = PeriodicSweep(env, settings.retention_sweep_interval_s, (sys.executable, "-m", "acefarm"))
    stopping = False

    def on_signal(signum: int, _: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        resolve_model(settings, env)
        if with_planner:
            resolve_lm(settings, env)
        else:
            env["PLANNER_ENABLED"] = "false"
        supervisor.start("streams", ["streams"])
        supervisor.start("scheduler", ["scheduler"])
        supervisor.start("webhooks", ["webhooks"])
        supervisor.start("gpu-consumer", ["gpu-consumer"])
        if with_planner:
            supervisor.start("planner", ["planner"])
        if with_trainer:
            supervisor.start("trainer", ["trainer"])
        supervisor.start("gateway", ["gateway", "--host", host, "--port", str(port)])
        probe = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
        log.info("dev.waiting_for_consumer", hint="the model loads and the GPU consumer joins its group")
        ready, next_probe = False, 0.0
        while not stopping:
            supervisor.check()
            if sweeper is not None:
                sweeper.check()
            if not ready and time.monotonic() >= next_probe:
                next_probe = time.monotonic() + READY_POLL_S
                if consumer_joined(probe):
                    ready = True
                    log.info("dev.ready", url=f"http://{host}:{port}/", docs=f"http://{host}:{port}/docs")
            time.sleep(0.2)
        return 0
    finally:
        log.info("dev.stopping")
        if sweeper is not None:
            sweeper.stop()
        supervisor.stop_all()
        if broker is not None:
            broker.stop()
        log.info("dev.stopped")
