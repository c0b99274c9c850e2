"""Dream-family diffusion models (remote code: `diffusion_generate`). Streamed by the tokens hook, which runs after
every denoising step: a token once unmasked never changes, so the generated tokens before the first still-masked
position are final, and each step hands out what that prefix gained ("final-prefix")."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engines.transformers_server.generation import Job


@dataclass(frozen=True)
class DiffusionDefaults:
    """The CLI's defaults for what a request leaves out (the catalog's settings, through the launch plan)."""
    steps: int | None = None  # None: Dream one step per generated token; DiffusionGemma its generation config's
    alg: str = "entropy"
    alg_temp: float = 0.0


def final_prefix(generated: list[int], mask_id: int) -> list[int]:
    """The generated tokens before the first masked position."""
    try:
        return generated[:generated.index(mask_id)]
    except ValueError:
        return generated


def mask_token_id(model, tokenizer) -> int:
    for source in (model.generation_config, model.config, tokenizer):
        value = getattr(source, "mask_token_id", None)
        if isinstance(value, int):
            return value
    raise ValueError("the model names no mask token (generation_config, config or tokenizer mask_token_id)")


class DreamGenerator:
    KIND = "dream"
    STREAMING = "final-prefix"

    def __init__(self, model, tokenizer, defaults: DiffusionDefaults):
        self.model, self.defaults, self.mask_id = model, defaults, mask_token_id(model, tokenizer)

    def run(self, job: Job) -> None:
        s, d, start = job.sampling, self.defaults, len(job.prompt_ids)

        def tokens_hook(step, x, logits):
            if step is not None:
                job.steps += 1
            job.offer(final_prefix(x[0, start:].tolist(), self.mask_id))
            return x

        input_ids = torch.tensor([job.prompt_ids], device=self.model.device)
        self.model.diffusion_generate(
            input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=s.max_tokens,
            steps=s.steps or d.steps or s.max_tokens, temperature=s.temperature,
            top_p=s.top_p if s.top_p < 1 else None, alg=s.alg or d.alg,
            alg_temp=s.alg_temp if s.alg_temp is not None else d.alg_temp,
            output_history=False, return_dict_in_generate=True, generation_tokens_hook_func=tokens_hook)
