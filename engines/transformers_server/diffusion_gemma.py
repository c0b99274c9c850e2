"""DiffusionGemma (transformers' block diffusion: `DiffusionGemmaForBlockDiffusion.generate`). It denoises one
canvas (block) of `canvas_length` tokens at a time and hands its streamer each finished block: streams arrive a
block at a time ("final-block"); a generation shorter than one block arrives in one chunk at the end. Drafts of
the block in progress change until it is done, so they are only used to count steps and notice a cancel."""

from __future__ import annotations

import torch

from engines.transformers_server.dream import DiffusionDefaults
from engines.transformers_server.generation import Job


class _BlockFeed:
    def __init__(self, job: Job):
        self.job, self.generated, self.prompt_seen = job, [], False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.generated.extend(value[0].tolist())
        self.job.offer(self.generated[:self.job.sampling.max_tokens])  # the last block may run past max_tokens

    def put_draft(self, value: torch.Tensor) -> None:  # after each denoising step
        self.job.steps += 1
        self.job.check_cancel()

    def end(self) -> None:
        pass


class DiffusionGemmaGenerator:
    KIND = "diffusion_gemma"
    STREAMING = "final-block"

    def __init__(self, model, tokenizer, defaults: DiffusionDefaults):
        self.model, self.defaults = model, defaults

    def run(self, job: Job) -> None:
        s = job.sampling
        if s.seed is None and s.temperature == 0:
            torch.manual_seed(0)  # the output is each block's argmax, but the canvas starts random: fix it
        kwargs = {"max_new_tokens": s.max_tokens, "return_dict_in_generate": True}
        if s.steps or self.defaults.steps:
            kwargs["max_denoising_steps"] = s.steps or self.defaults.steps
        if s.temperature > 0:  # its temperature falls linearly over the steps, from t_max to t_min
            kwargs.update(t_max=s.temperature, t_min=s.temperature / 2)
        input_ids = torch.tensor([job.prompt_ids], device=self.model.device)
        self.model.generate(input_ids, attention_mask=torch.ones_like(input_ids), streamer=_BlockFeed(job), **kwargs)
