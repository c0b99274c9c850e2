"""The tiny random-weight models of the Transformers engine (engines/transformers_server), built by
build_tiny_models.py: a DiffusionGemma from transformers' own config classes, and a Dream STAND-IN (a model folder
whose remote code, tiny_dream_standin/, honours Dream's `diffusion_generate` contract; not Dream). Both reuse the
tiny Llama's tokenizer; Hugging Face format only (llama.cpp and vLLM run neither)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

STANDIN_CODE = Path(__file__).resolve().parent / "tiny_dream_standin"
MASK_TOKEN = "<|mask|>"  # the stand-in's own mask token, appended to the tiny Llama's vocabulary (id 2000)
DIFFUSION_GEMMA = {
    "seed": 3,
    "text_config": {
        "vocab_size": 2000, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
        "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 64, "global_head_dim": 64,
        "max_position_embeddings": 4096, "sliding_window": 64, "layer_types": ["sliding_attention", "full_attention"],
        "num_experts": 2, "top_k_experts": 1, "moe_intermediate_size": 64,  # its layers always carry experts
        "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2},
    # a vision tower is always built: the smallest Gemma 4 one
    "vision_config": {"model_type": "gemma4_vision", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                      "num_attention_heads": 1, "num_key_value_heads": 1, "head_dim": 32,
                      "position_embedding_size": 64},
    "canvas_length": 8,  # tokens per block: its streamer gets one finished block at a time
    "boi_token_id": 1997, "eoi_token_id": 1998, "image_token_id": 1999,  # must be ids; no images are sent
    "generation_config": {"max_denoising_steps": 16, "t_min": 0.4, "t_max": 0.8, "stability_threshold": 1,
                          "confidence_threshold": 0.005, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
                          "sampler_config": {"entropy_bound": 0.1, "_cls_name": "EntropyBoundSamplerConfig"}},
}
DREAM_STANDIN = {
    "seed": 4,
    "config": {"vocab_size": 2001, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
               "num_attention_heads": 2, "max_position_embeddings": 4096, "mask_token_id": 2000},
}


def standin_code_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted(STANDIN_CODE.glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def recipes() -> dict[str, dict]:
    """name -> recipe (what the fingerprint covers)."""
    return {"tiny-diffusion-gemma": DIFFUSION_GEMMA,
            "tiny-dream-standin": {**DREAM_STANDIN, "code": standin_code_digest()}}


def write_diffusion_gemma(out: Path) -> None:
    import torch
    from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion

    recipe = {k: v for k, v in DIFFUSION_GEMMA.items() if k not in ("seed", "generation_config")}
    torch.manual_seed(DIFFUSION_GEMMA["seed"])
    model = DiffusionGemmaForBlockDiffusion(DiffusionGemmaConfig(**recipe)).to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    (out / "generation_config.json").write_text(json.dumps(DIFFUSION_GEMMA["generation_config"], indent=2) + "\n")


def write_dream_standin(out: Path) -> None:
    """Saved the way a real Dream folder is laid out: config.json's auto_map names the remote code beside it."""
    import torch
    from transformers import AutoTokenizer

    from tiny_dream_standin.configuration_dream_standin import DreamStandinConfig
    from tiny_dream_standin.modeling_dream_standin import DreamStandinModel

    tok = AutoTokenizer.from_pretrained(out)
    tok.add_special_tokens({"mask_token": MASK_TOKEN})
    tok.save_pretrained(out)
    for path in STANDIN_CODE.glob("*.py"):
        shutil.copyfile(path, out / path.name)
    config = DreamStandinConfig(**DREAM_STANDIN["config"])
    config.auto_map = {"AutoConfig": "configuration_dream_standin.DreamStandinConfig",
                       "AutoModel": "modeling_dream_standin.DreamStandinModel"}
    config.architectures = ["DreamStandinModel"]
    torch.manual_seed(DREAM_STANDIN["seed"])
    DreamStandinModel(config).to(torch.bfloat16).save_pretrained(out, safe_serialization=True)
    if len(AutoTokenizer.from_pretrained(out, trust_remote_code=True)) != DREAM_STANDIN["config"]["vocab_size"]:
        raise ValueError("the stand-in's tokenizer does not match its vocabulary")


WRITERS = {"tiny-diffusion-gemma": write_diffusion_gemma, "tiny-dream-standin": write_dream_standin}
