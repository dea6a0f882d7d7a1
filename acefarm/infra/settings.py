"""Settings from the environment (and an optional `.env`), shared by every service.

Every field maps to the upper-case environment variable of the same name; `.env.example` and the
README document each one.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.generation import TaskType
from schemas.ids import MODEL_NAME_PATTERN
from schemas.keys import MAX_COST, parse_priorities

BrokerKind = Literal["kafka", "embedded"]
FETCH_MAX_WAIT_MS: dict[BrokerKind, int] = {
    # Apache Kafka answers a waiting fetch as soon as data arrives: the wait only bounds idle round trips.
    "kafka": 500,
    # The embedded broker's wake-up proxy answers a waiting fetch on the next produce to its partitions (or the
    # next request on its connection), so a long wait costs no latency; an idle consumer asks again twice a
    # minute (at 5 s, these re-polls were a fifth of an idle dev stack's broker traffic). Below aiokafka's
    # 40 s request timeout.
    "embedded": 30_000,
}


class Settings(BaseSettings):
    """All acefarm configuration."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # Kafka
    kafka_bootstrap_servers: str = "localhost:9092"
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    kafka_partitions: int = Field(default=12, ge=1)
    kafka_replication_factor: int = Field(default=1, ge=1)
    kafka_session_timeout_ms: int = Field(default=30_000, ge=1_000)
    kafka_heartbeat_interval_ms: int = Field(default=3_000, ge=100)
    kafka_rebalance_timeout_ms: int = Field(default=60_000, ge=1_000)
    kafka_broker_kind: BrokerKind = "kafka"
    kafka_fetch_max_wait_ms: int | None = Field(default=None, ge=0, le=60_000)
    kafka_linger_ms: int = Field(default=0, ge=0, le=1_000)

    # Storage
    storage_backend: Literal["local", "s3"] = "local"
    output_dir: Path = Path("./data")
    storage_bucket: str = "acefarm"
    s3_endpoint_url: str | None = None
    s3_public_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_presign_expiry_s: int = Field(default=3600, ge=60, le=3600)

    # Gateway
    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(default=8000, ge=1, le=65535)
    public_base_url: str = ""
    dashboard_url: str = ""
    max_input_audio_bytes: int = Field(default=50 * 1024 * 1024, ge=1024)
    max_input_audio_seconds: float = Field(default=600.0, gt=0)
    sse_keepalive_s: float = Field(default=15.0, gt=0)
    auth_mode: Literal["keys", "off"] = "keys"
    link_signing_secret: SecretStr | None = None
    signed_link_ttl_s: int = Field(default=3600, ge=10, le=7 * 24 * 3600)
    allowed_hosts: str = "localhost,127.0.0.1,[::1]"
    gateway_intake_lookback_s: float = Field(default=3600.0, ge=0)

    # Admission: defaults for keys that set no limits of their own, and the farm-wide queue limit
    default_rate_per_s: float = Field(default=5.0, gt=0)
    default_burst: int = Field(default=20, ge=1)
    default_max_unfinished: int = Field(default=20, ge=1)
    max_job_cost: float = Field(default=600.0 * 8 * 8, gt=0, le=MAX_COST)
    default_priorities: str = "normal,batch"
    training_step_cost: float = Field(default=10.0, ge=0)
    max_queued_jobs: int = Field(default=10_000, ge=0)

    # Model / engine
    engine: str = "acestep"
    model_path: Path | None = None
    model_id: str = "ACE-Step/acestep-v15-xl-turbo-diffusers"
    model_revision: str | None = None
    task_types: str = "auto"
    default_model: str = Field(default="default", pattern=MODEL_NAME_PATTERN)
    model_name: str = Field(default="", pattern=f"^$|{MODEL_NAME_PATTERN}")
    model_pools: str = ""
    hf_token: SecretStr | None = None
    hf_home: Path | None = None
    device: str = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    cpu_offload: bool = False
    torch_compile: bool = False
    vae_tiling: bool = True
    progress_max_hz: float = Field(default=10.0, gt=0)
    max_batch: int = Field(default=4, ge=1)
    batch_duration_bucket_s: float = Field(default=10.0, gt=0)
    worker_id: str | None = None

    # Job deadlines, queue lifetime and attempts (GPU consumer and trainer)
    job_deadline_base_s: float = Field(default=600.0, gt=0)
    generation_deadline_per_unit_s: float = Field(default=0.05, ge=0)
    training_deadline_per_step_s: float = Field(default=10.0, ge=0)
    job_queue_ttl_s: float = Field(default=24 * 3600.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    # 5 Hz LM planning stage (planner)
    planner_enabled: bool = True
    lm_model_path: Path | None = None
    lm_model_id: str = "ACE-Step/acestep-5Hz-lm-1.7B"
    lm_model_revision: str | None = None
    lm_backend: Literal["transformers"] = "transformers"
    lm_device: str | None = None
    lm_lyrics_max_tokens: int = Field(default=1024, ge=16, le=8192)
    trainer_lm_captions: Literal["auto", "on", "off"] = "auto"

    # Retention (docs/reliability.md#retention): lifetimes in days, 0 keeps forever
    output_retention_days: float = Field(default=30.0, ge=0)
    input_retention_days: float = Field(default=7.0, ge=0)
    dataset_retention_days: float = Field(default=7.0, ge=0)
    checkpoint_retention_days: float = Field(default=30.0, ge=0)
    attempt_retention_days: float = Field(default=30.0, ge=0)
    status_retention_days: float = Field(default=30.0, ge=0)
    status_trim_interval_s: float = Field(default=60.0, gt=0)
    retention_sweep_interval_s: float = Field(default=3600.0, gt=0)

    # LoRA datasets (checked by the gateway before queuing, and again by the trainer)
    lora_max_zip_bytes: int = Field(default=512 * 1024 * 1024, ge=1024)
    lora_max_uncompressed_bytes: int = Field(default=2 * 1024 * 1024 * 1024, ge=1024)
    lora_max_compression_ratio: float = Field(default=100.0, ge=1.0)
    lora_max_zip_entries: int = Field(default=1000, ge=1)
    lora_min_tracks: int = Field(default=3, ge=1)
    lora_max_tracks: int = Field(default=50, ge=1)
    lora_min_track_seconds: float = Field(default=5.0, gt=0)
    lora_max_track_seconds: float = Field(default=600.0, gt=0)
    dataset_check_concurrency: int = Field(default=2, ge=1)
    dataset_check_timeout_s: float = Field(default=300.0, gt=0)
    dataset_check_memory_bytes: int = Field(default=4 * 1024 * 1024 * 1024, ge=256 * 1024 * 1024)

    # Scheduler (fair queues between the intake and the ready topic; docs/scheduling.md)
    scheduler_id: str | None = None
    scheduler_ready_depth: int = Field(default=2, ge=1)
    scheduler_refresh_ms: int = Field(default=100, ge=10)
    scheduler_weight_high: int = Field(default=4, ge=1)
    scheduler_weight_normal: int = Field(default=2, ge=1)
    scheduler_weight_batch: int = Field(default=1, ge=1)
    scheduler_max_waiting: int = Field(default=100_000, ge=1)
    scheduler_snapshot_interval_s: float = Field(default=1.0, gt=0)
    scheduler_snapshot_top: int = Field(default=20, ge=1, le=1000)
    # Observability
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    heartbeat_interval_s: float = Field(default=5.0, gt=0)
    backlog_refresh_s: float = Field(default=5.0, ge=1.0)
    otel_exporter_otlp_endpoint: str | None = None
    # Webhooks
    webhook_secret: SecretStr | None = None
    webhook_allow_private: bool = False
    webhook_connect_timeout_s: float = Field(default=3.0, gt=0, le=60)
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=120)
    webhook_retry_for_s: float = Field(default=24 * 3600.0, ge=0)
    webhook_backoff_s: float = Field(default=5.0, gt=0)
    webhook_backoff_max_s: float = Field(default=3600.0, gt=0)

    # Logging
    log_level: str = "INFO"
    log_format: Literal["auto", "json", "console"] = "auto"

    @property
    def fetch_max_wait_ms(self) -> int:
        """How long a consumer's fetch may wait at the broker: KAFKA_FETCH_MAX_WAIT_MS or the broker kind's default."""
        if self.kafka_fetch_max_wait_ms is not None:
            return self.kafka_fetch_max_wait_ms
        return FETCH_MAX_WAIT_MS[self.kafka_broker_kind]

    @field_validator("task_types")
    @classmethod
    def _check_task_types(cls, value: str) -> str:
        if value.strip().lower() == "auto":
            return value
        known = {t.value for t in TaskType}
        unknown = [name.strip() for name in value.split(",") if name.strip() and name.strip() not in known]
        if unknown:
            raise ValueError(f"unknown task types {unknown}; known: {sorted(known)} or 'auto'")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _check_webhook_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("WEBHOOK_SECRET must be at least 32 characters (e.g. `openssl rand -hex 32`)")
        return value

    @field_validator("dashboard_url")
    @classmethod
    def _check_dashboard_url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("DASHBOARD_URL must be an http:// or https:// URL (or empty)")
        return value

    @field_validator("default_priorities")
    @classmethod
    def _check_priorities(cls, value: str) -> str:
        parse_priorities(value)
        return value

    @field_validator("model_pools")
    @classmethod
    def _check_model_pools(cls, value: str) -> str:
        from acefarm.infra.pools import parse_model_pools

        parse_model_pools(value)
        return value

    @field_validator("link_signing_secret")
    @classmethod
    def _check_link_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("LINK_SIGNING_SECRET must be at least 32 characters (e.g. `openssl rand -base64 48`)")
        return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
