"""llama.cpp's llama-server: model spec → command line, readiness, metrics. This module is the llama.cpp
`EngineAdapter` (engines/adapter.py)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from engines import build, memory
from engines.device import cpu_has_amx, has_cuda_gpu
from engines.model_files import GGUF_FILE
from engines.spec import LaunchPlan, ModelSpec

NAME = "llamacpp"
FILES = GGUF_FILE
READY_PATHS = ("/health",)  # 503 while loading, 200 when ready
METRICS_PATH = "/metrics"  # needs --metrics; exposes llamacpp:* series
# cpp-httplib closes the connection after every streamed answer while announcing keep-alive: a pooled client
# that reuses it fails its next request ("Can not write request body"). Streams go on their own connection.
REUSABLE_AFTER_STREAM = False
NO_MMAP = ["--load-mode", "none"]  # this llama.cpp's --no-mmap (its default, `auto`, maps the file)
NO_REPACK = ["--no-repack"]


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # strict: no "8192" or true for an int
    ctx_size: int = Field(8192, ge=16, le=1 << 20)
    n_gpu_layers: int = Field(999, ge=0, le=100_000)  # used only on a CUDA build/box
    parallel: int = Field(4, ge=1, le=256)  # llama.cpp refuses more sequences (n_seq_max <= 256) and exits
    # false reads the whole GGUF into memory instead of mapping it (llama.cpp's --no-mmap, spelled
    # `--load-mode none` by the pinned llama-server). On a GB10 (unified memory) large GGUFs load about 10x faster
    # that way (docs/deployment.md, "GB10 facts").
    mmap: bool = True
    # Weight repacking into the CPU's fast layouts. null: on, except where the CPU has AMX: the pinned llama.cpp's
    # AMX kernels (a kind of repacking) segfault there at the first quantized matmul (Q4_1, Q4_K_M), so a
    # quantized GGUF would never load on such a CPU (docs/deployment.md)
    repack: bool | None = None


def build_command(spec: ModelSpec, port: int, extra_args: list[str], binary: str | None = None) -> list[str]:
    """`binary`: the settings' llama-server, else $LLAMA_SERVER_BIN, else the setup script's build."""
    opts = Options(**spec.options)
    argv = [
        str(build.find_binary(binary)),
        "-m", spec.path,
        "--host", "127.0.0.1", "--port", str(port),
        "-c", str(opts.ctx_size),
        "--parallel", str(opts.parallel),
        "--alias", spec.served_name,
        "--metrics",
    ]
    if has_cuda_gpu():
        argv += ["-ngl", str(opts.n_gpu_layers)]
    if not opts.mmap:
        argv += NO_MMAP
    if not (opts.repack if opts.repack is not None else not cpu_has_amx()):
        argv += NO_REPACK
    return argv + list(extra_args)


def default_env() -> dict[str, str]:
    return {}


def estimate_memory(plan: LaunchPlan) -> memory.MemoryEstimate:
    return memory.llamacpp_estimate(plan)
