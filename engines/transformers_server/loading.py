"""A model folder in, a generator out: which kind it is (config.json's model_type), its tokenizer and weights, its
end tokens and context limit."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from engines.transformers_server.dream import DiffusionDefaults

DREAM_TYPES = {"dream"}  # model_type, lower-cased: Dream and its fine-tunes (ELYZA-Diffusion) carry "Dream"
DTYPES = ("auto", "bfloat16", "float16", "float32")


class LoadError(Exception):
    pass


def read_config(model_dir: Path) -> dict:
    try:
        return json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise LoadError(f"{model_dir} has no readable config.json: {exc}") from exc


def detect_kind(config: dict) -> str:
    model_type = str(config.get("model_type", "")).lower()
    if model_type in DREAM_TYPES:
        return "dream"
    if model_type == "diffusion_gemma":
        return "diffusion_gemma"
    return "causal"


def context_limit(config: dict) -> int | None:
    for section in (config, config.get("text_config") or {}):
        if isinstance(section.get("max_position_embeddings"), int):
            return section["max_position_embeddings"]
    return None


def end_token_ids(model, tokenizer, with_pad: bool) -> list[int]:
    """Every id that ends the text: the generation config's, the model's and the tokenizer's end tokens (and the
    pad token, which diffusion models write after the end)."""
    ids: list[int] = []
    sources = [model.generation_config, model.config, tokenizer]
    for source in sources:
        value = getattr(source, "eos_token_id", None)
        ids += value if isinstance(value, list) else [value]
    if with_pad:
        ids += [getattr(source, "pad_token_id", None) for source in sources]
    return list(dict.fromkeys(i for i in ids if isinstance(i, int)))


def dtype_keyword() -> str:
    """`from_pretrained`'s dtype argument: `torch_dtype` before transformers 4.56 (an own environment for Dream's
    remote code runs 4.51), `dtype` since."""
    import transformers

    major, minor = (int(part) for part in transformers.__version__.split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


@dataclass
class Loaded:
    generator: object  # a generation.Generator
    tokenizer: object
    kind: str
    context_limit: int | None
    end_ids: list[int]  # the token ids that end the text


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load(model_dir: Path, dtype: str, trust_remote_code: bool, defaults: DiffusionDefaults,
         device: str = "auto") -> Loaded:
    import torch
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    config = read_config(model_dir)
    kind = detect_kind(config)
    if "auto_map" in config and not trust_remote_code:
        raise LoadError(f"{model_dir} runs its own code (config.json auto_map: "
                        f"{', '.join(config['auto_map'].values())}); start with --trust-remote-code to allow it")
    torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    common = {dtype_keyword(): torch_dtype, "trust_remote_code": trust_remote_code}
    if kind == "dream":
        from engines.transformers_server.dream import DreamGenerator
        model = AutoModel.from_pretrained(model_dir, **common).to(resolve_device(device)).eval()
        if not hasattr(model, "diffusion_generate"):
            raise LoadError(f"{model_dir}: model_type {config['model_type']} but its code has no diffusion_generate")
        generator = DreamGenerator(model, tokenizer, defaults)
    elif kind == "diffusion_gemma":
        from transformers import DiffusionGemmaForBlockDiffusion

        from engines.transformers_server.diffusion_gemma import DiffusionGemmaGenerator
        model = DiffusionGemmaForBlockDiffusion.from_pretrained(model_dir, **common).to(resolve_device(device)).eval()
        generator = DiffusionGemmaGenerator(model, tokenizer, defaults)
    else:
        from engines.transformers_server.causal import CausalGenerator
        model = AutoModelForCausalLM.from_pretrained(model_dir, **common).to(resolve_device(device)).eval()
        generator = CausalGenerator(model, tokenizer, end_token_ids(model, tokenizer, with_pad=False))
    # diffusion models write pad tokens after the end; a causal model's pad token may be an ordinary one
    end_ids = end_token_ids(model, tokenizer, with_pad=kind != "causal")
    return Loaded(generator, tokenizer, kind, context_limit(config), end_ids)
