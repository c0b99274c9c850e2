"""STAND-IN for Dream's generation_utils.py: `diffusion_generate` with Dream's signature and semantics. The generated
region starts as mask tokens; each of `steps` steps predicts every position at once, and unmasks the share of masked
positions the schedule says, most confident first (`alg`: origin = random, maskgit_plus = top probability,
topk_margin = top-1 minus top-2, entropy = negative entropy); `alg_temp` > 0 samples which ones. A token once
unmasked is final. `generation_tokens_hook_func(step, x, logits)` sees (and may replace) `x` before the first step
(step None) and after each step."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers.utils import ModelOutput


@dataclass
class DreamStandinModelOutput(ModelOutput):
    sequences: torch.LongTensor | None = None
    history: tuple[torch.FloatTensor] | None = None


def top_p_logits(logits, top_p):
    sorted_logits, sorted_indices = torch.sort(logits, descending=True)
    cumulative = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1)
    remove = cumulative > top_p
    remove[..., 1:] = remove[..., :-1].clone()
    remove[..., 0] = False
    mask = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, sorted_indices, remove)
    return logits.masked_fill(mask, torch.finfo(logits.dtype).min)


def sample_tokens(logits, temperature=0.0, top_p=None, margin_confidence=False, neg_entropy=False):
    if temperature > 0:
        logits = logits / temperature
    if top_p is not None and top_p < 1:
        logits = top_p_logits(logits, top_p)
    probs = torch.softmax(logits, dim=-1)
    if temperature > 0:
        x0 = torch.multinomial(probs, num_samples=1).squeeze(-1)
        confidence = torch.gather(probs, -1, x0.unsqueeze(-1)).squeeze(-1)
    else:
        confidence, x0 = probs.max(dim=-1)
    if margin_confidence:
        top2 = torch.topk(probs, 2, dim=-1).values
        confidence = top2[:, 0] - top2[:, 1]
    if neg_entropy:
        confidence = torch.sum(probs * torch.log(probs + 1e-10), dim=-1)
    return confidence, x0


class DreamStandinGenerationMixin:
    @torch.no_grad()
    def diffusion_generate(self, inputs, attention_mask=None, max_new_tokens=None, max_length=None, steps=None,
                           temperature=0.0, top_p=None, alg="origin", alg_temp=None, eps=1e-3, output_history=False,
                           return_dict_in_generate=False, generation_tokens_hook_func=None,
                           generation_logits_hook_func=None, **unused):
        tokens_hook = generation_tokens_hook_func or (lambda step, x, logits: x)
        logits_hook = generation_logits_hook_func or (lambda step, x, logits: logits)
        mask_id = self.config.mask_token_id
        max_length = inputs.shape[1] + max_new_tokens if max_new_tokens is not None else max_length
        steps = steps or 512
        histories = [] if (return_dict_in_generate and output_history) else None
        x = F.pad(inputs, (0, max_length - inputs.shape[1]), value=mask_id)
        if attention_mask is not None and torch.any(attention_mask == 0):
            attention_mask = F.pad(attention_mask, (0, max_length - attention_mask.shape[1]), value=1)
            tok_idx = attention_mask.long().cumsum(-1) - 1
            tok_idx.masked_fill_(attention_mask == 0, 1)
            attention_mask = torch.logical_and(attention_mask.unsqueeze(1).unsqueeze(-2).bool(),
                                               attention_mask.unsqueeze(1).unsqueeze(-1).bool())
        else:
            tok_idx, attention_mask = None, "full"
        timesteps = torch.linspace(1, eps, steps + 1, device=x.device)
        x = tokens_hook(None, x, None)
        for i in range(steps):
            mask_index = x == mask_id
            logits = self(x, attention_mask, tok_idx).logits
            logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)  # Dream predicts position i from i - 1
            logits = logits_hook(i, x, logits)
            mask_logits = logits[mask_index]
            t, s = timesteps[i], timesteps[i + 1]
            if alg == "origin":
                p_transfer = 1 - s / t if i < steps - 1 else 1
                x0 = torch.full_like(x[mask_index], mask_id)
                transfer = torch.rand(*x0.shape, device=x.device) < p_transfer
                _, x0[transfer] = sample_tokens(mask_logits[transfer], temperature, top_p)
                x[mask_index] = x0
            else:
                if alg not in ("maskgit_plus", "topk_margin", "entropy"):
                    raise RuntimeError(f"Unknown alg: {alg}")
                confidence, x0 = sample_tokens(mask_logits, temperature, top_p, margin_confidence=alg == "topk_margin",
                                               neg_entropy=alg == "entropy")
                masked_per_row = mask_index.sum() / mask_index.shape[0]
                n_transfer = int(masked_per_row * (1 - s / t)) if i < steps - 1 else int(masked_per_row)
                full_confidence = torch.full_like(x, -torch.inf, dtype=logits.dtype)
                full_confidence[mask_index] = confidence
                if n_transfer > 0:
                    if not alg_temp:
                        _, transfer_index = torch.topk(full_confidence, n_transfer)
                    else:
                        weights = F.softmax(full_confidence / alg_temp, dim=-1)
                        transfer_index = torch.multinomial(weights, num_samples=n_transfer)
                    candidate = torch.full_like(x, mask_id)
                    candidate[mask_index] = x0
                    rows = torch.arange(x.size(0), device=x.device).unsqueeze(1).expand_as(transfer_index)
                    x[rows, transfer_index] = candidate[rows, transfer_index]
            x = tokens_hook(i, x, logits)
            if histories is not None:
                histories.append(x.clone())
        return DreamStandinModelOutput(sequences=x, history=histories) if return_dict_in_generate else x
