"""A local model's parameter count, read from its own files: the tensor shapes in safetensors headers or in
the GGUF header (exact), else an estimate from config.json. None when unknown (a hosted API)."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

from engines import gguf_header

def count(path: str | Path | None) -> tuple[int | None, str | None]:
    """(parameters, how they were found: safetensors, gguf, config.json estimate), or (None, None)."""
    if not path:
        return None, None
    path = Path(path)
    try:
        if path.is_file() and path.suffix == ".gguf":
            return gguf_parameters(path), "gguf"
        if path.is_dir():
            files = sorted(path.glob("*.safetensors"))
            if files:
                return sum(safetensors_parameters(f) for f in files), "safetensors"
            if (path / "config.json").exists():
                estimate = config_estimate(json.loads((path / "config.json").read_text()))
                return (estimate, "config.json estimate") if estimate else (None, None)
    except (OSError, ValueError, KeyError, struct.error):
        return None, None
    return None, None


def safetensors_parameters(path: Path) -> int:
    with path.open("rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    return sum(math.prod(t["shape"]) for name, t in header.items() if name != "__metadata__")


def gguf_parameters(path: Path) -> int:
    return gguf_header.read(path, want=lambda key: False, tensors=True).parameters


def config_estimate(config: dict) -> int | None:
    """A Llama-shaped decoder's parameters from config.json: embeddings, attention, MLP, norms."""
    config = config.get("text_config", config)
    try:
        hidden, layers, vocab = config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]
        inter = config["intermediate_size"]
    except KeyError:
        return None
    heads = config.get("num_attention_heads", 1)
    head_dim = config.get("head_dim") or hidden // heads
    kv = config.get("num_key_value_heads", heads)
    attention = hidden * head_dim * (2 * heads + 2 * kv)
    per_layer = attention + 3 * hidden * inter + 2 * hidden
    embeddings = vocab * hidden * (1 if config.get("tie_word_embeddings") else 2)
    return layers * per_layer + embeddings + hidden


def human(n: int | None) -> str:
    """1_234_567_890 → '1.23B', 596_049_920 → '596M', 1_100_000 → '1.1M'."""
    if not n:
        return "–"
    for scale, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            value = n / scale
            return f"{value:.3g}{unit}"
    return str(n)


def parse_human(text: str) -> int:
    """'1.2B', '596M', '8e9', '1200000' → a number (--params for a hosted model)."""
    text = text.strip().upper()
    scale = {"T": 1e12, "B": 1e9, "M": 1e6, "K": 1e3}.get(text[-1:], 1)
    return int(float(text[:-1] if scale != 1 else text) * scale)
