# syntax=docker/dockerfile:1
# R-Adapt Serve image. Two variants from this one file (docs/deploy.md):
#   docker build -t radapt-serve:cuda .                          # default: CUDA runtime base, CUDA torch
#   docker build -t radapt-serve:cpu --build-arg VARIANT=cpu .   # python slim base, CPU torch
# Only the stages the chosen variant needs are built (BuildKit, the default builder).

ARG VARIANT=cuda
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu24.04
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- bases: the same image for building and running, so the venv's interpreter path matches ----
FROM ${CUDA_IMAGE} AS base-cuda
# Distribution packages float with security updates; the pins that matter are Python's and torch's.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# PyPI's Linux torch wheel is the CUDA build and carries its own CUDA libraries.
ENV TORCH_INDEX_URL=https://pypi.org/simple

FROM ${PYTHON_IMAGE} AS base-cpu
# The CPU-only wheel: a few hundred MB instead of several GB of CUDA libraries.
ENV TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

# ---- builder: a venv with torch (pinned by constraints-cpu.txt) and the project ----
# base-${VARIANT} names a stage above, not a registry image: DL3006 (untagged image) does not apply.
# hadolint ignore=DL3006
FROM base-${VARIANT} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# torch first, in its own layer: it changes far less often than the code.
COPY constraints-cpu.txt ./
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" -c constraints-cpu.txt torch
# .dockerignore lets only the package sources, pyproject.toml, README.md and the constraints through.
COPY . .
RUN pip install --no-cache-dir -c constraints-cpu.txt '.[store]'  # [store]: s3:// adapter stores
# Bake the offline tiny checkpoint in, so `--model builtin:tiny-clip` serves with no network at all.
ENV RADAPT_CACHE=/opt/radapt/cache
RUN python -c "from adapters import zoo; zoo.ensure_exported('builtin:tiny-clip')"

# ---- runtime: the venv, the baked cache, a non-root user; no compilers, no pip cache ----
# hadolint ignore=DL3006
FROM base-${VARIANT} AS runtime
ARG UID=10001
RUN useradd --system --uid "${UID}" --user-group --create-home --home-dir /home/radapt radapt \
    && mkdir -p /data/hf /data/adapters \
    && chown -R radapt:radapt /data
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder --chown=radapt:radapt /opt/radapt /opt/radapt
# Every setting is a RADAPT_* variable (docs/configuration.md); flags after the image name override
# them. HF_HOME: the Hugging Face cache (mount it; with HF_HUB_OFFLINE=1 models load only from it).
# RADAPT_CACHE: builtin: checkpoints (tiny-clip baked in; others built here on first use).
# RADAPT_ADAPTER_DIR: where POST /v1/adapters finds adapter files (a shared volume in production).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HOME=/data/hf \
    HF_HUB_OFFLINE=0 \
    RADAPT_CACHE=/opt/radapt/cache \
    RADAPT_ADAPTER_DIR=/data/adapters \
    RADAPT_MODELS=builtin:tiny-clip \
    RADAPT_HOST=0.0.0.0 \
    RADAPT_PORT=8000
VOLUME ["/data/hf", "/data/adapters"]
WORKDIR /home/radapt
USER ${UID}
EXPOSE 8000
# Ready means loaded and warmed up (503 before); urllib raises on any non-2xx, so no curl is needed.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health/ready' % os.environ.get('RADAPT_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["radapt", "serve"]
# Default args: none, on purpose. A flag here would override the RADAPT_* variables that compose and
# the Kubernetes ConfigMap set; the defaults live in ENV above. `docker run IMAGE --model M` appends flags.
CMD []
