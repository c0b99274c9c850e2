"""Which accelerator the engines run on: `ULLM_DEVICE=cpu|cuda` wins, else CUDA when nvidia-smi sees a GPU."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess


@functools.cache
def has_cuda_gpu() -> bool:
    forced = os.environ.get("ULLM_DEVICE", "").lower()
    if forced in ("cpu", "cuda"):
        return forced == "cuda"
    if not shutil.which("nvidia-smi"):
        return False
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


@functools.cache
def cpu_has_amx() -> bool:
    """The CPU advertises Intel AMX (Sapphire Rapids and later): /proc/cpuinfo's amx_int8 flag."""
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " amx_int8" in line for line in f)
    except OSError:
        return False
