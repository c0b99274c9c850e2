"""How much memory a launch will take, estimated before it starts, and which memory pool it draws on.

On a GB10 (Grace + Blackwell) both engines draw on one pool of unified memory, and running it dry can freeze the
whole machine; on a CPU-only box the same holds for RAM. The router refuses a load whose estimate would leave
less than a reserve free (router/memory_guard.py); these are the estimates it uses (each engine's adapter,
`estimate_memory`, gives its own):

- llama.cpp: the GGUF's size (all its split parts) plus the KV cache for `-c` cells in total (llama-server
  shares them out among its `--parallel` slots), from the GGUF's own metadata: layers x cells x KV heads x
  (key length + value length) x bytes per element of the cache types (`-ctk`/`-ctv`, f16 by default).
  Compute buffers (tens to hundreds of MB) are not counted.
- vLLM: on unified memory, `gpu_memory_utilization` x the pool (vLLM takes that share for weights, KV cache and
  activations); on a discrete GPU the same share of the GPU's memory (reported, not checked against RAM); on
  the CPU build, the weight files plus its KV space (`VLLM_CPU_KVCACHE_SPACE` GiB, else
  `--kv-cache-memory-bytes`) plus the Python/torch runtime (VLLM_CPU_RUNTIME), or without either setting
  `gpu_memory_utilization` x RAM in all, as vLLM itself decides.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from engines import gguf_header
from engines.device import has_cuda_gpu
from engines.spec import LaunchPlan

GiB = 1 << 30
# bytes per element of llama.cpp's KV cache types (block formats: block bytes / block elements)
CACHE_TYPE_BYTES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32, "q4_1": 20 / 32,
                    "iq4_nl": 18 / 32, "q5_0": 22 / 32, "q5_1": 24 / 32}
SPLIT_PART = re.compile(r"^(?P<stem>.*)-(?P<part>\d{5})-of-(?P<total>\d{5})\.gguf$")
WEIGHT_FILES = ("*.safetensors", "*.bin", "*.pt", "*.pth")
# vLLM's CPU build holds about this much beside weights and KV cache (Python, torch, the engine-core process):
# its process tree held 1.83 GiB with the tiny model once loaded, its 1 GiB of KV space not yet touched
VLLM_CPU_RUNTIME = 2 * GiB


def human_bytes(n: float) -> str:
    return f"{n / GiB:.2f} GiB" if n >= GiB / 10 else f"{n / (1 << 20):.1f} MiB"


@dataclass(frozen=True)
class MemoryEstimate:
    total_bytes: int
    weights_bytes: int
    kv_cache_bytes: int
    runtime_bytes: int  # what the engine's own process holds beside weights and KV cache
    basis: str  # how it was computed, in words
    pool: str  # "unified", "discrete-gpu" or "cpu": where it is drawn from

    def as_dict(self) -> dict:
        return asdict(self)


@functools.cache
def memory_pool() -> str:
    """Where the engines' memory comes from: `ULLM_MEMORY_POOL` wins; without a CUDA GPU, "cpu" (system RAM);
    with one whose driver reports no memory size of its own (GB10 and other Grace superchips), "unified";
    else "discrete-gpu"."""
    forced = os.environ.get("ULLM_MEMORY_POOL", "").lower()
    if forced in ("cpu", "unified", "discrete-gpu"):
        return forced
    if not has_cuda_gpu():
        return "cpu"
    total = _nvidia_smi_memory_total()
    return "discrete-gpu" if total else "unified"


def _nvidia_smi_memory_total() -> int | None:
    """The first GPU's own memory in bytes, or None where the driver reports none ("[N/A]" on a GB10)."""
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10).stdout.split("\n")[0].strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return int(float(out)) * (1 << 20) if out.replace(".", "", 1).isdigit() else None  # MiB


def _arg(argv: list[str], *names: str) -> str | None:
    """The value of the last of `names` on the command line (later flags win, as in the engines)."""
    value = None
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                value = argv[i + 1]
            elif arg.startswith(name + "="):
                value = arg.split("=", 1)[1]
    return value


def gguf_parts(path: Path) -> list[Path]:
    """A GGUF and, for a split model (name-00001-of-00003.gguf), its other parts."""
    match = SPLIT_PART.match(path.name)
    if not match:
        return [path]
    total = int(match["total"])
    return [path.with_name(f"{match['stem']}-{part:05d}-of-{total:05d}.gguf") for part in range(1, total + 1)]


def gguf_kv_shape(path: Path) -> tuple[int, int, int]:
    """(layers, KV heads, key length + value length) from a GGUF's metadata."""
    metadata = gguf_header.read(path, want=lambda key: not key.startswith("tokenizer.")).metadata
    arch = metadata.get("general.architecture")

    def field(name: str, default=None):
        return metadata.get(f"{arch}.{name}", default)
    layers, heads = field("block_count"), field("attention.head_count")
    if not isinstance(layers, int) or heads is None:
        raise ValueError(f"{path.name}: no {arch}.block_count or attention.head_count in its metadata")
    kv_heads = field("attention.head_count_kv", heads)
    if isinstance(kv_heads, list):  # per-layer counts (some architectures): the largest bounds the cache
        kv_heads = max(kv_heads)
    if isinstance(heads, list):
        heads = max(heads)
    head_dim = field("embedding_length") // heads
    return layers, kv_heads, field("attention.key_length", head_dim) + field("attention.value_length", head_dim)


def llamacpp_estimate(plan: LaunchPlan) -> MemoryEstimate:
    path = Path(plan.spec.path)
    weights = sum(part.stat().st_size for part in gguf_parts(path))
    cells = int(_arg(plan.argv, "-c", "--ctx-size") or plan.spec.options.get("ctx_size", 8192))
    layers, kv_heads, kv_length = gguf_kv_shape(gguf_parts(path)[0])
    k_type = _arg(plan.argv, "-ctk", "--cache-type-k") or "f16"
    v_type = _arg(plan.argv, "-ctv", "--cache-type-v") or "f16"
    per_element = (CACHE_TYPE_BYTES.get(k_type, 2.0) + CACHE_TYPE_BYTES.get(v_type, 2.0)) / 2
    kv_cache = int(layers * cells * kv_heads * kv_length * per_element)
    basis = (f"GGUF {human_bytes(weights)} + KV cache {cells} cells x {layers} layers x {kv_heads} KV heads x "
             f"{kv_length} (K+V) x {per_element:g} B ({k_type}/{v_type}) = {human_bytes(kv_cache)}")
    return MemoryEstimate(weights + kv_cache, weights, kv_cache, 0, basis, memory_pool())


def vllm_estimate(plan: LaunchPlan) -> MemoryEstimate:
    pool = memory_pool()
    utilization = float(_arg(plan.argv, "--gpu-memory-utilization")
                        or plan.spec.options.get("gpu_memory_utilization", 0.9))
    folder = Path(plan.spec.path)
    weights = sum(f.stat().st_size for pattern in WEIGHT_FILES for f in folder.glob(pattern))
    if pool in ("unified", "discrete-gpu"):
        size = psutil.virtual_memory().total if pool == "unified" else _nvidia_smi_memory_total() or 0
        share = int(utilization * size)
        return MemoryEstimate(share, weights, max(share - weights, 0), 0,
                              f"gpu_memory_utilization {utilization:g} x {size / GiB:.1f} GiB ({pool})", pool)
    space = plan.env.get("VLLM_CPU_KVCACHE_SPACE")
    flag = _arg(plan.argv, "--kv-cache-memory-bytes")
    if not space and not flag:  # vLLM sizes the whole worker to this share of RAM
        share = int(utilization * psutil.virtual_memory().total)
        return MemoryEstimate(share, weights, max(share - weights - VLLM_CPU_RUNTIME, 0), VLLM_CPU_RUNTIME,
                              f"gpu_memory_utilization {utilization:g} x RAM (no KV space set)", pool)
    kv_cache, how = ((int(float(space) * GiB), f"VLLM_CPU_KVCACHE_SPACE={space} GiB") if space
                     else (int(float(flag)), f"--kv-cache-memory-bytes {flag}"))
    return MemoryEstimate(weights + kv_cache + VLLM_CPU_RUNTIME, weights, kv_cache, VLLM_CPU_RUNTIME,
                          f"weights {human_bytes(weights)} + KV space {human_bytes(kv_cache)} ({how}) + runtime "
                          f"{human_bytes(VLLM_CPU_RUNTIME)}", pool)
