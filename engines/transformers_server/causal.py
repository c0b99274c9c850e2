"""Any local causal LM through `generate`, streamed token by token (a streamer that feeds the job each new token)."""

from __future__ import annotations

import torch
from transformers import GenerationConfig
from transformers.generation.streamers import BaseStreamer

from engines.transformers_server.generation import Job


class _TokenFeed(BaseStreamer):
    def __init__(self, job: Job):
        self.job, self.generated, self.prompt_seen = job, [], False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate hands over the prompt first
            self.prompt_seen = True
            return
        self.generated.extend(value.reshape(-1).tolist())
        self.job.offer(self.generated)  # raising here ends `generate` at once

    def end(self) -> None:
        pass


class CausalGenerator:
    KIND = "causal"
    STREAMING = "token"

    def __init__(self, model, tokenizer, end_ids: list[int]):
        self.model, self.tokenizer, self.end_ids = model, tokenizer, end_ids

    def run(self, job: Job) -> None:
        s = job.sampling
        config = GenerationConfig(max_new_tokens=s.max_tokens, do_sample=s.temperature > 0,
                                  eos_token_id=self.end_ids, pad_token_id=self.end_ids[0])
        if s.ignore_eos:
            config.update(min_new_tokens=s.max_tokens)
        if s.temperature > 0:
            config.update(temperature=s.temperature, top_p=s.top_p, top_k=0)
        input_ids = torch.tensor([job.prompt_ids], device=self.model.device)
        self.model.generate(input_ids, attention_mask=torch.ones_like(input_ids), generation_config=config,
                            streamer=_TokenFeed(job))
