"""vLLM's OpenAI server: model spec → command line, readiness, metrics, Mistral quirks. This module is the vLLM
`EngineAdapter` (engines/adapter.py)."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import replace
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from engines import memory, vllm_distributed
from engines.device import has_cuda_gpu
from engines.model_files import HUGGING_FACE_FOLDER
from engines.spec import LaunchPlan, ModelSpec

NAME = "vllm"
FILES = HUGGING_FACE_FOLDER
READY_PATHS = ("/health", "/v1/models")  # both answer 200 only once the model is served
METRICS_PATH = "/metrics"
REUSABLE_AFTER_STREAM = True  # uvicorn keeps the connection open after a stream
# a tensor/pipeline parallel rank that died here, or one on another node whose connection closed (its executor
# then shuts the engine down, with ~80 lines of tracebacks and leak warnings after this line), or an engine that
# never started
REASON_LINES = re.compile(r"Worker proc \S+ died unexpectedly|Worker failed with error|"
                          r"Engine core initialization failed")
MISTRAL_FLAGS = ["--tokenizer-mode", "mistral", "--config-format", "mistral", "--load-format", "mistral"]
DIFFUSION_ENV = {"VLLM_USE_V2_MODEL_RUNNER": "1"}  # vLLM serves diffusion LMs on its V2 model runner only
CPU_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1"}  # GiB of KV cache on the CPU build; config `env` overrides it


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # strict: no "8192" or true for an int
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "bfloat16"
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    max_model_len: int = Field(8192, ge=16, le=1 << 20)
    # No torch.compile and no CUDA graphs: on the CPU build a start of SmolLM2-135M takes 51 s instead of 109 s, for
    # ~15% slower decoding. Not the default: eager, the tiny test models' CPU worker dies of SIGILL at its first
    # request on an AMX CPU (compiled, it does not); on a GPU, CUDA graphs are worth far more
    enforce_eager: bool = False
    # One model over several GPUs or boxes with vLLM's own runtime (docs/distributed.md). tensor x pipeline
    # parallel ranks in all; `nnodes` boxes share them (the others run the `vllm-worker` program: mp, a
    # `--headless` vLLM with its node rank; ray, `ray start --address ray_address`). The router talks only to
    # this box, the head. vLLM's CPU build runs tensor and pipeline parallel with mp only.
    tensor_parallel_size: int = Field(1, ge=1, le=64)
    pipeline_parallel_size: int = Field(1, ge=1, le=64)
    nnodes: int = Field(1, ge=1, le=64)
    master_addr: str | None = None  # mp across boxes: the head's address on the link between them
    master_port: int | None = Field(None, ge=1, le=65535)  # its torch.distributed port (vLLM's default: 29501)
    distributed_executor_backend: Literal["mp", "ray"] | None = None  # None: vLLM's choice (mp on one box)
    ray_address: str | None = None  # ray: the Ray head's host:port (`ray start --head --port ...` on the head)
    # the network interface of the link between the boxes (e.g. enp1s0f1np1): NCCL, Gloo and UCX are held to it
    link_interface: str | None = None
    # A diffusion LM vLLM serves natively (DiffusionGemma): its denoising canvas (block) and steps per block
    # (else the model's generation_config.json), as --diffusion-config, on vLLM's V2 model runner
    diffusion_canvas_length: int | None = Field(None, ge=1, le=1 << 16)
    diffusion_max_denoising_steps: int | None = Field(None, ge=1, le=1 << 16)

    @model_validator(mode="after")
    def _distributed(self) -> "Options":
        ranks = self.tensor_parallel_size * self.pipeline_parallel_size
        if self.distributed_executor_backend == "ray":
            if not self.ray_address:
                raise ValueError("distributed_executor_backend ray needs ray_address (the Ray head's host:port)")
            if self.master_addr or self.master_port:
                raise ValueError("master_addr and master_port are for the mp backend; ray uses ray_address")
        elif self.ray_address:
            raise ValueError("ray_address needs distributed_executor_backend: ray")
        if self.nnodes > 1:
            if self.distributed_executor_backend is None:
                raise ValueError("nnodes > 1 needs distributed_executor_backend: mp or ray")
            if self.distributed_executor_backend == "mp" and not self.master_addr:
                raise ValueError("nnodes > 1 with the mp backend needs master_addr (the head's address on the link)")
            if ranks % self.nnodes:
                raise ValueError(f"nnodes {self.nnodes} must divide tensor_parallel_size x pipeline_parallel_size "
                                 f"({ranks})")
        elif self.master_addr or self.master_port:
            raise ValueError("master_addr and master_port are for nnodes > 1")
        if self.diffusion_max_denoising_steps is not None and self.diffusion_canvas_length is None:
            raise ValueError("diffusion_max_denoising_steps needs diffusion_canvas_length (a diffusion model's canvas)")
        return self


def is_mistral_format(model_dir: Path) -> bool:
    """Mistral's own layout (params.json + consolidated weights) needs vLLM's mistral loaders."""
    return (model_dir / "params.json").is_file() and any(model_dir.glob("consolidated*.safetensors"))


def model_context_limit(model_dir: Path) -> int | None:
    """The longest context the model was built for, read from its config.json (or params.json)."""
    for name, keys in (("config.json", ("max_position_embeddings", "max_seq_len", "n_positions")),
                       ("params.json", ("max_seq_len", "max_position_embeddings"))):
        try:
            cfg = json.loads((model_dir / name).read_text())
        except (OSError, ValueError):
            continue
        for section in (cfg, cfg.get("text_config") or {}):
            for key in keys:
                if isinstance(section.get(key), int):
                    return section[key]
    return None


def build_command(spec: ModelSpec, port: int, extra_args: list[str], binary: str | None = None) -> list[str]:
    """`binary` is not used: vLLM runs on the router's own Python."""
    opts = Options(**spec.options)
    argv = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", spec.path,
        "--host", "127.0.0.1", "--port", str(port),
        "--served-model-name", spec.served_name,
    ]
    return argv + model_args(spec, opts) + vllm_distributed.head_args(opts) + list(extra_args)


def model_args(spec: ModelSpec, opts: Options) -> list[str]:
    """What the model runs with, the same on the head and on every worker node."""
    model_dir = Path(spec.path)
    limit = model_context_limit(model_dir)
    max_len = min(opts.max_model_len, limit) if limit else opts.max_model_len
    argv = ["--dtype", opts.dtype, "--max-model-len", str(max_len)]
    if has_cuda_gpu():
        argv += ["--gpu-memory-utilization", str(opts.gpu_memory_utilization)]
    if opts.enforce_eager:
        argv.append("--enforce-eager")
    if is_mistral_format(model_dir):
        argv += MISTRAL_FLAGS
    return argv + diffusion_args(opts)


def diffusion_args(opts: Options) -> list[str]:
    if opts.diffusion_canvas_length is None:
        return []
    config = {"canvas_length": opts.diffusion_canvas_length}
    if opts.diffusion_max_denoising_steps is not None:
        config["max_denoising_steps"] = opts.diffusion_max_denoising_steps
    return ["--diffusion-config", json.dumps(config, separators=(",", ":"))]


def default_env() -> dict[str, str]:
    return {} if has_cuda_gpu() else dict(CPU_ENV)


def spec_env(spec: ModelSpec) -> dict[str, str]:
    """Environment the model's own options call for on the head (the distributed runtime's)."""
    opts = Options(**spec.options)
    return {**vllm_distributed.head_env(opts), **(DIFFUSION_ENV if opts.diffusion_canvas_length else {})}


def distributed(spec: ModelSpec) -> dict | None:
    opts = Options(**spec.options)
    if vllm_distributed.ranks(opts) == 1 and not vllm_distributed.spans_boxes(opts):
        return None
    return {"runtime": f"vllm {opts.distributed_executor_backend or 'default backend'}",
            "tensor_parallel_size": opts.tensor_parallel_size, "pipeline_parallel_size": opts.pipeline_parallel_size,
            "nnodes": opts.nnodes, "master_addr": opts.master_addr, "ray_address": opts.ray_address}


def waiting_on(spec: ModelSpec, log: str) -> str | None:
    return vllm_distributed.waiting_on(Options(**spec.options), log)


def estimate_memory(plan: LaunchPlan) -> memory.MemoryEstimate:
    """One process's estimate, or with several ranks this box's: its share of the weights (the rest on the other
    boxes) and, on the CPU build, a KV space and a runtime per local rank."""
    single = memory.vllm_estimate(plan)
    opts = Options(**plan.spec.options)
    local_ranks = vllm_distributed.ranks(opts) // opts.nnodes
    if local_ranks == 1 and opts.nnodes == 1:
        return single
    per_rank = single.pool == "cpu"
    weights = single.weights_bytes // opts.nnodes
    kv_cache = single.kv_cache_bytes * (local_ranks if per_rank else 1)
    runtime = single.runtime_bytes * (local_ranks if per_rank else 1)
    total = weights + kv_cache + runtime if per_rank else single.total_bytes
    return replace(single, total_bytes=total, weights_bytes=weights, kv_cache_bytes=kv_cache, runtime_bytes=runtime,
                   basis=f"{local_ranks} local rank(s) of {vllm_distributed.ranks(opts)} on {opts.nnodes} box(es): "
                         f"{'KV space and runtime per rank, ' if per_rank else ''}weights / {opts.nnodes}; from "
                         f"{single.basis}")
