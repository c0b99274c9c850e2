"""vLLM's OpenAI server: model spec → command line, readiness, metrics, Mistral quirks. This module is the vLLM
`EngineAdapter` (engines/adapter.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from engines import memory
from engines.device import has_cuda_gpu
from engines.model_files import HUGGING_FACE_FOLDER
from engines.spec import LaunchPlan, ModelSpec

NAME = "vllm"
FILES = HUGGING_FACE_FOLDER
READY_PATHS = ("/health", "/v1/models")  # both answer 200 only once the model is served
METRICS_PATH = "/metrics"
REUSABLE_AFTER_STREAM = True  # uvicorn keeps the connection open after a stream
MISTRAL_FLAGS = ["--tokenizer-mode", "mistral", "--config-format", "mistral", "--load-format", "mistral"]
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
    model_dir = Path(spec.path)
    limit = model_context_limit(model_dir)
    max_len = min(opts.max_model_len, limit) if limit else opts.max_model_len
    argv = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", spec.path,
        "--host", "127.0.0.1", "--port", str(port),
        "--served-model-name", spec.served_name,
        "--dtype", opts.dtype,
        "--max-model-len", str(max_len),
    ]
    if has_cuda_gpu():
        argv += ["--gpu-memory-utilization", str(opts.gpu_memory_utilization)]
    if opts.enforce_eager:
        argv.append("--enforce-eager")
    if is_mistral_format(model_dir):
        argv += MISTRAL_FLAGS
    return argv + list(extra_args)


def default_env() -> dict[str, str]:
    return {} if has_cuda_gpu() else dict(CPU_ENV)


def estimate_memory(plan: LaunchPlan) -> memory.MemoryEstimate:
    return memory.vllm_estimate(plan)
