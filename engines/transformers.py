"""The Transformers engine (engines/transformers_server): model spec → command line, readiness, metrics, memory
estimate. This module is its `EngineAdapter` (engines/adapter.py).

Named `transformers` like the engine's one spelling; imported as `engines.transformers`, it never shadows the
`transformers` package (absolute imports), as long as nothing runs a script from inside engines/."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from engines import memory, model_files
from engines.spec import LaunchPlan, ModelSpec

NAME = "transformers"
READY_PATHS = ("/health", "/v1/models")  # both 503 while the model loads, 200 once it is served
METRICS_PATH = "/metrics"  # transformers:* series, labelled model_name
REUSABLE_AFTER_STREAM = True  # aiohttp keeps the connection open after a chunked stream
# why the server stopped: a model it cannot load (its folder, remote code it may not run, a transformers too new)
REASON_LINES = re.compile(r"cannot load|trust_remote_code|KeyError: 'default'")
SERVER_MODULE = "engines.transformers_server"
# What the server's process holds beside weights and working memory (Python, torch, transformers, aiohttp): the
# tiny models' servers held 0.44-0.50 GiB RSS on the CPU (2026-12-06); a CUDA context adds several hundred MB
RUNTIME_BYTES = memory.GiB
ESTIMATE_TOKENS = 4096  # the sequence (prompt + generation) the working-memory estimate is sized for
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


FILES = model_files.TRANSFORMERS_FOLDER


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)  # strict: no "8" or true for an int
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    max_queue: int = Field(8, ge=0, le=1024)  # requests waiting behind the one generating; beyond: 503
    # Diffusion defaults for requests that name none (a request's `steps`, `alg`, `alg_temp` win)
    diffusion_steps: int | None = Field(None, ge=1, le=65536)
    diffusion_alg: Literal["origin", "maskgit_plus", "topk_margin", "entropy"] = "entropy"
    diffusion_alg_temp: float = Field(0.0, ge=0, le=100)
    # Dream-family folders carry their own Python (config.json auto_map): they load only with this set
    trust_remote_code: bool = False
    threads: int | None = Field(None, ge=1, le=1024)  # torch CPU threads


def build_command(spec: ModelSpec, port: int, extra_args: list[str], binary: str | None = None) -> list[str]:
    """`binary`: the settings' Python (an own environment, e.g. transformers 4.51 for Dream's remote code);
    None: the router's own."""
    opts = Options(**spec.options)
    argv = [
        binary or sys.executable, "-m", SERVER_MODULE,
        "--model", spec.path,
        "--host", "127.0.0.1", "--port", str(port),
        "--served-model-name", spec.served_name,
        "--dtype", opts.dtype,
        "--max-queue", str(opts.max_queue),
        "--diffusion-alg", opts.diffusion_alg,
        "--diffusion-alg-temp", str(opts.diffusion_alg_temp),
    ]
    if opts.diffusion_steps is not None:
        argv += ["--diffusion-steps", str(opts.diffusion_steps)]
    if opts.threads is not None:
        argv += ["--threads", str(opts.threads)]
    if opts.trust_remote_code:
        argv.append("--trust-remote-code")
    return argv + list(extra_args)


def default_env() -> dict[str, str]:
    return {"TOKENIZERS_PARALLELISM": "false"}  # no tokenizer thread pools beside torch's


def spec_env(spec: ModelSpec) -> dict[str, str]:
    return {}


def distributed(spec: ModelSpec) -> dict | None:
    return None  # one process, one device


def _text_config(model_dir: Path) -> dict:
    config = json.loads((model_dir / "config.json").read_text())
    return {**config, **(config.get("text_config") or {})}


def waiting_on(spec: ModelSpec, log: str) -> str | None:
    return None  # one process on this box


def estimate_memory(plan: LaunchPlan) -> memory.MemoryEstimate:
    """Weights (scaled when --dtype widens them) + working memory for ESTIMATE_TOKENS + the runtime. Working memory:
    a causal model's KV cache; a diffusion model's float32 logits over the whole sequence, twice (it has no KV
    cache but predicts every position at every step)."""
    folder = Path(plan.spec.path)
    weights = sum(f.stat().st_size for pattern in memory.WEIGHT_FILES for f in folder.glob(pattern))
    config = _text_config(folder)
    stored = str(config.get("dtype") or config.get("torch_dtype") or "bfloat16")
    wanted = memory._arg(plan.argv, "--dtype") or "auto"
    if wanted in DTYPE_BYTES and stored in DTYPE_BYTES:
        weights = weights * DTYPE_BYTES[wanted] // DTYPE_BYTES[stored]
    element = DTYPE_BYTES.get(wanted if wanted in DTYPE_BYTES else stored, 2)
    model_type = str(config.get("model_type", "")).lower()
    if model_type in ("dream", "diffusion_gemma", "diffusion_gemma_text"):
        working = 2 * ESTIMATE_TOKENS * int(config["vocab_size"]) * 4
        how = f"logits {ESTIMATE_TOKENS} tokens x vocab {config['vocab_size']} x 4 B x 2"
    else:
        heads = int(config.get("num_attention_heads", 1))
        head_dim = int(config.get("head_dim") or int(config.get("hidden_size", 0)) // heads)
        kv_heads = int(config.get("num_key_value_heads") or heads)
        layers = int(config.get("num_hidden_layers", 0))
        working = 2 * layers * ESTIMATE_TOKENS * kv_heads * head_dim * element
        how = f"KV cache {ESTIMATE_TOKENS} tokens x {layers} layers x {kv_heads} KV heads x {head_dim} x 2 x {element} B"
    basis = (f"weights {memory.human_bytes(weights)} + {how} = {memory.human_bytes(working)} + runtime "
             f"{memory.human_bytes(RUNTIME_BYTES)}")
    return memory.MemoryEstimate(weights + working + RUNTIME_BYTES, weights, working, RUNTIME_BYTES, basis,
                                 memory.memory_pool())
