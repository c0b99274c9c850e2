"""llama.cpp's llama-server: model spec → command line, readiness, metrics. This module is the llama.cpp
`EngineAdapter` (engines/adapter.py)."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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
REASON_LINES = re.compile(r"Failed to connect to \S+")  # an rpc worker that cannot be reached
NO_MMAP = ["--load-mode", "none"]  # this llama.cpp's --no-mmap (its default, `auto`, maps the file)
NO_REPACK = ["--no-repack"]
# With rpc workers: log verbosity 4, at which llama-server logs each device (RPC0 ...) with its free memory and
# the split (`offloaded 15/31 layers`, each device's model and KV buffer), the first thing to check on two boxes.
RPC_LOG_VERBOSITY = ["-lv", "4"]
# A worker that cannot be reached aborts llama-server; without this, ggml then runs gdb for a backtrace whose ~40
# lines bury the one that says which worker failed (the router quotes the log's last lines).
RPC_ENV = {"GGML_NO_BACKTRACE": "1"}


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # strict: no "8192" or true for an int
    ctx_size: int = Field(8192, ge=16, le=1 << 20)
    n_gpu_layers: int = Field(999, ge=0, le=100_000)  # used on a CUDA build/box, and with rpc workers
    parallel: int = Field(4, ge=1, le=256)  # llama.cpp refuses more sequences (n_seq_max <= 256) and exits
    # false reads the whole GGUF into memory instead of mapping it (llama.cpp's --no-mmap, spelled
    # `--load-mode none` by the pinned llama-server). On a GB10 (unified memory) large GGUFs load about 10x faster
    # that way (docs/deployment.md, "GB10 facts").
    mmap: bool = True
    # Weight repacking into the CPU's fast layouts. null: on, except where the CPU has AMX: the pinned llama.cpp's
    # AMX kernels (a kind of repacking) segfault there at the first quantized matmul (Q4_1, Q4_K_M), so a
    # quantized GGUF would never load on such a CPU (docs/deployment.md)
    repack: bool | None = None
    # llama.cpp's RPC: workers (`host:port` of a ggml-rpc-server, docs/distributed.md) whose devices take part of
    # the model. llama.cpp spreads layers and KV cache over the offload devices (the workers first, then the
    # local GPU) by free memory; `tensor_split` gives the proportions instead, in that order. On a box without a
    # GPU the workers are the only offload devices: `n_gpu_layers` layers go to them, the rest stays local.
    rpc: list[str] = []
    tensor_split: list[float] | None = None
    rpc_only: bool = False  # offload to the workers' devices only (`--device RPC0,...`), not to a local GPU

    @field_validator("rpc")
    @classmethod
    def _endpoints(cls, endpoints: list[str]) -> list[str]:
        for endpoint in endpoints:
            host, sep, port = endpoint.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536 or "," in endpoint:
                raise ValueError(f"{endpoint!r} is not host:port (an rpc-worker's address, e.g. 10.0.0.2:50052)")
        return endpoints

    @model_validator(mode="after")
    def _split(self) -> "Options":
        if self.tensor_split is not None and (not self.tensor_split or min(self.tensor_split) < 0
                                              or sum(self.tensor_split) <= 0):
            raise ValueError("tensor_split: proportions >= 0, not all 0 (one per offload device: the rpc "
                             "workers in order, then the local GPU)")
        if (self.tensor_split is not None or self.rpc_only) and not self.rpc:
            raise ValueError("tensor_split and rpc_only need rpc workers")
        return self


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
    if has_cuda_gpu() or opts.rpc:  # the workers are offload devices, on a box without a GPU too
        argv += ["-ngl", str(opts.n_gpu_layers)]
    argv += rpc_args(opts)
    if not opts.mmap:
        argv += NO_MMAP
    if not (opts.repack if opts.repack is not None else not cpu_has_amx()):
        argv += NO_REPACK
    return argv + list(extra_args)


def rpc_args(opts: Options) -> list[str]:
    if not opts.rpc:
        return []
    argv = ["--rpc", ",".join(opts.rpc), *RPC_LOG_VERBOSITY]
    if opts.tensor_split is not None:
        argv += ["--tensor-split", ",".join(f"{share:g}" for share in opts.tensor_split)]
    if opts.rpc_only:  # one device per worker, as an rpc-worker on a GB10 (or a CPU box) exposes
        argv += ["--device", ",".join(f"RPC{i}" for i in range(len(opts.rpc)))]
    return argv


def local_share(opts: Options, layers: int) -> float:
    """The part of the weights and KV cache that stays in this box's memory when `opts.rpc` workers take the
    rest (1.0 without workers). The workers' free memory is not known here: without `tensor_split` the
    offload devices count as equal."""
    if not opts.rpc:
        return 1.0
    offloaded = min(opts.n_gpu_layers, layers + 1) / (layers + 1)  # llama.cpp counts the output layer as one
    local_gpus = 0 if opts.rpc_only or not has_cuda_gpu() else 1
    shares = opts.tensor_split or [1.0] * (len(opts.rpc) + local_gpus)
    shares = (list(shares) + [0.0] * (len(opts.rpc) + local_gpus))[:len(opts.rpc) + local_gpus]
    local_gpu_part = sum(shares[len(opts.rpc):]) / sum(shares) if sum(shares) else 0.0
    return (1 - offloaded) + offloaded * local_gpu_part


def default_env() -> dict[str, str]:
    return {}


def spec_env(spec: ModelSpec) -> dict[str, str]:
    return dict(RPC_ENV) if Options(**spec.options).rpc else {}


def distributed(spec: ModelSpec) -> dict | None:
    opts = Options(**spec.options)
    if not opts.rpc:
        return None
    return {"runtime": "llama.cpp rpc", "rpc_workers": list(opts.rpc), "tensor_split": opts.tensor_split,
            "n_gpu_layers": opts.n_gpu_layers, "rpc_only": opts.rpc_only}


def waiting_on(spec: ModelSpec, log: str) -> str | None:
    return None  # its loads wait on nothing outside this box (an rpc worker that is not there fails it at once)


def estimate_memory(plan: LaunchPlan) -> memory.MemoryEstimate:
    """The whole model's weights and KV cache, or with rpc workers only this box's share of them (the ledger
    counts this box's memory; each worker's is its own)."""
    whole = memory.llamacpp_estimate(plan)
    opts = Options(**plan.spec.options)
    if not opts.rpc:
        return whole
    layers = memory.gguf_kv_shape(memory.gguf_parts(Path(plan.spec.path))[0])[0]
    share = local_share(opts, layers)
    weights, kv_cache = int(whole.weights_bytes * share), int(whole.kv_cache_bytes * share)
    return replace(whole, total_bytes=weights + kv_cache + whole.runtime_bytes, weights_bytes=weights,
                   kv_cache_bytes=kv_cache,
                   basis=f"this box's share {share:.0%} (the rest on rpc workers {', '.join(opts.rpc)}) of: "
                         f"{whole.basis}")
