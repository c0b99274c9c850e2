"""The memory-bandwidth ceiling of decoding: a decoded token reads every active weight once plus the KV cache
so far, so `bandwidth ÷ bytes read per token` is the most tokens/s a machine can decode, whatever the engine.

Bytes per token, from the model's own files (GGUF headers, or safetensors headers and config.json):
- weights: every tensor's bytes, except lookup tables (the token embedding when an output matrix exists: one
  row of it is read per token; tied embeddings are read whole, as the output layer) and vision/audio towers;
  for a mixture of experts, the experts' tensors count with the share `experts used ÷ expert count` (shared
  experts and dense layers count whole);
- KV cache at context c: per attention layer, kv heads × (key + value head dim) × bytes per element × c
  (a sliding-window layer: × min(c, window)); MLA layers cache (kv_lora_rank + rope dim) per token, once.
N parallel streams share one read of the weights per step (the best case for a MoE: all use the same experts),
so their total ceiling is N × bandwidth ÷ (weights + N × KV).
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

from engines import gguf_header

KV_BYTES = 2  # f16 / bf16 cache elements: llama.cpp's default cache type, vLLM's "auto" for a bf16 model
SPLIT = re.compile(r"^(?P<stem>.+)-(?P<part>\d{5})-of-(?P<count>\d{5})\.gguf$")
GGUF_LOOKUPS = ("token_embd.weight", "per_layer_token_embd.weight")
GGUF_OUTPUT = "output.weight"
HF_LOOKUPS = ("embed_tokens.weight", "embed_tokens_per_layer.weight")
HF_OUTPUT = "lm_head.weight"
HF_NOT_TEXT = re.compile(r"(^|\.)(vision_tower|vision_model|visual|multi_modal_projector|audio_tower|mm_projector)\.")
GGUF_EXPERT = re.compile(r"_exps\.")  # blk.N.ffn_{gate,up,down,gate_up}_exps.weight (shared ones are _shexp)
HF_EXPERT = re.compile(r"\.experts\.")  # mlp.experts.3.up_proj, block_sparse_moe.experts.0.w1 (not shared_experts)
# llama.cpp's sliding-window layer period by architecture when the GGUF has no pattern key (src/models/*.cpp:
# load_swa_pattern): layer i slides when i % period < period - 1
GGUF_SWA_PERIOD = {"gemma2": 2, "gemma3": 6, "gemma3n": 5, "cohere2": 4, "gpt-oss": 2, "exaone4": 4, "olmo2": 4}
SIZES = {"F64": 8, "I64": 8, "F32": 4, "I32": 4, "F16": 2, "BF16": 2, "I16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
         "I8": 1, "U8": 1, "BOOL": 1}


@dataclass
class ModelBytes:
    """What one decoded token reads from memory, as the model's own files say."""
    source: str  # gguf, or safetensors
    weight_bytes: int  # every tensor's bytes in the files
    read_bytes: float  # weights read per decoded token (dense + active experts' share)
    expert_bytes: int = 0  # the routed experts' tensors, all of them
    expert_count: int | None = None
    experts_used: int | None = None
    # per attention layer: (KV cache bytes per token of context, sliding window or None)
    kv_layers: list[tuple[float, int | None]] = field(default_factory=list)
    context_length: int | None = None  # the model's trained context
    vocab_size: int | None = None
    notes: list[str] = field(default_factory=list)

    def kv_bytes(self, context: float) -> float:
        """The KV cache read by one token decoded at `context` tokens of context."""
        return sum(per * (min(context, window) if window else context) for per, window in self.kv_layers)

    def bytes_per_token(self, context: float) -> float:
        return self.read_bytes + self.kv_bytes(context)

    def summary(self) -> dict:
        return {"source": self.source, "weight_bytes": self.weight_bytes, "read_bytes": round(self.read_bytes),
                "expert_bytes": self.expert_bytes, "expert_count": self.expert_count,
                "experts_used": self.experts_used, "attention_layers": len(self.kv_layers),
                "kv_bytes_per_context_token": round(self.kv_bytes(1)), "context_length": self.context_length,
                "vocab_size": self.vocab_size, "notes": self.notes}


def ceiling(bandwidth_bytes_s: float, model: ModelBytes, context: float, streams: int = 1) -> float:
    """Tokens/s (all streams together) that `bandwidth_bytes_s` allows at `context` tokens of context each."""
    return streams * bandwidth_bytes_s / (model.read_bytes + streams * model.kv_bytes(context))


@dataclass
class Limit:
    """A model on a machine: the ceiling at any context and number of streams."""
    bandwidth_bytes_s: float
    model: ModelBytes

    def tokens_per_s(self, context: float, streams: int = 1) -> float:
        return ceiling(self.bandwidth_bytes_s, self.model, context, streams)


def percent(measured: float | None, limit: float | None) -> float | None:
    return None if measured is None or not limit else 100 * measured / limit


def named(name: str, wanted: str) -> bool:
    """`name` is `wanted` or ends with `.wanted` (output.weight is not blk.0.attn_output.weight)."""
    return name == wanted or name.endswith("." + wanted)


def weights_read(sizes: dict[str, int], lookups: tuple[str, ...], output: str, expert: re.Pattern,
                 share: float | None) -> tuple[float, int]:
    """(bytes read per token, routed experts' bytes) from each tensor's size."""
    has_output = any(named(name, output) for name in sizes)
    read, experts = 0.0, 0
    for name, size in sizes.items():
        embedding, per_layer = named(name, lookups[0]), any(named(name, n) for n in lookups[1:])
        if per_layer or embedding and has_output:
            continue  # a lookup table: one row per token (tied embeddings are the output layer: read whole)
        if share is not None and expert.search(name):
            experts += size
            read += size * share
        else:
            read += size
    return read, experts


# ---- GGUF ---------------------------------------------------------------------------------------------------

def gguf_parts(path: Path) -> list[Path]:
    """A split GGUF's parts, all of them whichever part is named; a single file alone."""
    match = SPLIT.match(path.name)
    if not match:
        return [path]
    count = int(match["count"])
    return [path.with_name(f"{match['stem']}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]


def _per_layer(value, layers: int) -> list:
    return list(value) if isinstance(value, list) else [value] * layers


def from_gguf(path: Path, kv_bytes: float = KV_BYTES) -> ModelBytes:
    parts = gguf_parts(path)
    missing = [p.name for p in parts if not p.exists()]
    if missing:
        raise FileNotFoundError(f"split GGUF {path.name}: missing parts {', '.join(missing)}")
    headers = [gguf_header.read(p, want=lambda k: not k.startswith("tokenizer."), tensors=True) for p in parts]
    meta = headers[0].metadata
    sizes = {name: size for h in headers for name, size in h.tensor_bytes().items()}
    arch = meta.get("general.architecture", "llama")

    def key(name, default=None):
        return meta.get(f"{arch}.{name}", default)

    experts, used = key("expert_count"), key("expert_used_count")
    share = used / experts if experts and used else None
    read, expert_bytes = weights_read(sizes, GGUF_LOOKUPS, GGUF_OUTPUT, GGUF_EXPERT, share)
    layers = key("block_count", 0)
    heads = _per_layer(key("attention.head_count", 0), layers)
    kv_heads = _per_layer(key("attention.head_count_kv", heads), layers)
    embedding = key("embedding_length", 0)
    head_dim = embedding // max(max(heads, default=1), 1)
    k_dim, v_dim = key("attention.key_length", head_dim), key("attention.value_length", head_dim)
    window = key("attention.sliding_window")
    pattern = key("attention.sliding_window_pattern", GGUF_SWA_PERIOD.get(arch))
    notes = []
    if window and pattern is None:
        notes.append(f"{arch}: sliding window {window} with no known layer pattern; every layer counted whole")
    mla = key("attention.kv_lora_rank")
    kv_layers = []
    for i in range(layers):
        if not kv_heads[i]:
            continue  # a recurrent or convolution layer: no cache that grows with the context
        slides = bool(window) and (pattern[i] if isinstance(pattern, list) else
                                   pattern is not None and (pattern == 0 or i % pattern < pattern - 1))
        per = (mla + key("rope.dimension_count", 0)) if mla else kv_heads[i] * (k_dim + v_dim)
        kv_layers.append((per * kv_bytes, window if slides else None))
    vocab = key("vocab_size") or next((dims[1] for h in headers for name, dims in h.tensors
                                       if name == "token_embd.weight" and len(dims) > 1), None)
    if len(parts) > 1:
        notes.append(f"split GGUF: {len(parts)} parts counted")
    return ModelBytes("gguf", sum(sizes.values()), read, expert_bytes, experts, used, kv_layers,
                      key("context_length"), vocab, notes)


# ---- safetensors + config.json ------------------------------------------------------------------------------

def safetensors_sizes(path: Path) -> dict[str, int]:
    """Each tensor's bytes, from a .safetensors file's JSON header (data_offsets end - start)."""
    with path.open("rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    return {name: info["data_offsets"][1] - info["data_offsets"][0]
            for name, info in header.items() if name != "__metadata__"}


def _first(config: dict, *names, default=None):
    return next((config[n] for n in names if config.get(n) is not None), default)


def from_hf_folder(folder: Path, kv_bytes: float = KV_BYTES) -> ModelBytes:
    config = json.loads((folder / "config.json").read_text())
    text = config.get("text_config") or config  # multimodal configs nest the language model's
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder}: no .safetensors files")
    sizes = {name: size for f in files for name, size in safetensors_sizes(f).items()
             if not HF_NOT_TEXT.search(name)}
    experts = _first(text, "num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts")
    used = _first(text, "num_experts_per_tok", "num_experts_per_token", "moe_topk", "experts_per_token")
    share = used / experts if experts and used else None
    read, expert_bytes = weights_read(sizes, HF_LOOKUPS, HF_OUTPUT, HF_EXPERT, share)
    layers = text.get("num_hidden_layers", 0)
    heads = text.get("num_attention_heads", 1)
    kv_heads = _first(text, "num_key_value_heads", default=heads)
    head_dim = _first(text, "head_dim", default=text.get("hidden_size", 0) // max(heads, 1))
    types = text.get("layer_types") or ["full_attention"] * layers
    window, mla = text.get("sliding_window"), text.get("kv_lora_rank")
    kv_layers = []
    for kind in types:
        if "attention" not in kind:
            continue  # conv, mamba, linear attention: no cache that grows with the context
        per = (mla + text.get("qk_rope_head_dim", 0)) if mla else kv_heads * 2 * head_dim
        kv_layers.append((per * kv_bytes, window if kind == "sliding_attention" else None))
    return ModelBytes("safetensors", sum(sizes.values()), read, expert_bytes, experts, used, kv_layers,
                      text.get("max_position_embeddings"), text.get("vocab_size"),
                      [f"{len(files)} safetensors files"] if len(files) > 1 else [])


def from_path(path: str | Path, kv_bytes: float = KV_BYTES) -> ModelBytes:
    """A GGUF file (any part of a split one) or a Hugging Face folder."""
    path = Path(path)
    if path.is_dir():
        return from_hf_folder(path, kv_bytes)
    return from_gguf(path, kv_bytes)
