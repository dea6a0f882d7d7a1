# syntax=docker/dockerfile:1
#
# One image for every acefarm service. The default command is the GPU consumer; the same image runs
# the others by command:
#   docker run IMAGE acefarm gateway | acefarm streams | acefarm scheduler | acefarm webhooks | acefarm trainer | acefarm models download
#
# Base image: CUDA 13.0 runtime, because the lock file pins torch==2.13.0 from PyPI, whose Linux x86_64
# wheel is the CUDA 13.0 build (torch.version.cuda == "13.0"; the nvidia-*-cu13 / cuda-toolkit 13.0.x
# wheels it depends on bundle the CUDA libraries). The original spec named
# nvidia/cuda:12.1-runtime-ubuntu22.04, but a 12.x base under a cu130 torch would advertise (through
# NVIDIA_REQUIRE_CUDA) a driver floor the wheels do not meet: CUDA 13.0 needs an NVIDIA driver >= 580 on
# the host, and this base makes the NVIDIA container runtime refuse to start on an older driver instead
# of torch failing later. Ubuntu 22.04 as in the original spec. tests/deploy/test_dockerfile.py fails
# when the base's CUDA major.minor drifts from the torch build in uv.lock.
# Smaller alternative: torch brings its own CUDA libraries, so nvidia/cuda:13.0.2-base-ubuntu22.04
# (driver hooks and cudart only) works too and saves about 2 GB.
FROM nvidia/cuda:13.0.2-runtime-ubuntu22.04

# uv from its official image, pinned (the version acefarm's lock file was written with).
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /uvx /usr/local/bin/

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# tini reaps children and forwards SIGTERM so consumers stop cleanly (offsets are committed only after
# a job's final event, so a stop mid-job means redelivery, never loss). The distro release is pinned by
# the base tag; package versions are left to its security updates.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates tini \
    && rm -rf /var/lib/apt/lists/*

# Python 3.11 managed by uv (Ubuntu 22.04 ships 3.10), installed where the non-root user can read it.
ENV UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_PYTHON=3.11 \
    UV_PYTHON_PREFERENCE=only-managed \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PROJECT_ENVIRONMENT=/app/.venv
RUN uv python install 3.11

WORKDIR /app

# Dependency layer: only the project metadata and the lock file, so code changes do not reinstall
# torch and friends. --frozen: install exactly what uv.lock says, never re-resolve.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-install-project --no-dev

# Code layer.
COPY README.md ./
COPY schemas ./schemas
COPY acefarm ./acefarm
COPY gateway ./gateway
COPY streams ./streams
COPY gpu_consumer ./gpu_consumer
COPY trainer ./trainer
COPY scheduler ./scheduler
COPY webhooks ./webhooks
COPY planner ./planner
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev

# Non-root user; the model cache, checkpoints and local output live in volumes it owns.
RUN groupadd --system --gid 10001 acefarm \
    && useradd --system --uid 10001 --gid acefarm --create-home --home-dir /home/acefarm acefarm \
    && mkdir -p /cache/huggingface /models /data \
    && chown -R acefarm:acefarm /cache /models /data

# HF_HOME: Hugging Face cache (weights of MODEL_ID); mount a volume so weights download once per machine.
# MODEL_PATH (unset by default) may point at a local checkpoint under /models.
# GATEWAY_HOST: listen on every interface inside the container (the default 127.0.0.1 is for dev).
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HOME=/cache/huggingface \
    OUTPUT_DIR=/data \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=8000 \
    LOG_FORMAT=json
VOLUME ["/cache", "/models", "/data"]

USER 10001:10001
EXPOSE 8000

# No image-wide HEALTHCHECK: the default command (GPU consumer), streams and the trainer serve no HTTP
# port, and a check that only proves the process exists adds nothing to the container runtime's own
# view. The gateway's check (GET /healthz) is set per service in docker-compose.yml.
HEALTHCHECK NONE

ENTRYPOINT ["/usr/bin/tini", "--"]
# One GPU consumer per container and per GPU (docker run --gpus device=N): it runs one job at a time
# (the original spec's concurrency 1 per GPU) and sees its GPU as cuda:0.
CMD ["acefarm", "gpu-consumer"]
