"""What all model kinds share: a generation job (the prompt, the sampling, the text stream and the way out of a
generation in progress) and the exceptions that end one early. Each kind's module runs a job in the worker thread."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol


from engines.transformers_server.protocol import Sampling
from engines.transformers_server.text_stream import TextStream


class Cancelled(Exception):
    """The client went away: stop generating."""


class Finished(Exception):
    """The text is complete (an end token or a stop string): nothing more is needed."""


@dataclass
class Job:
    prompt_ids: list[int]
    sampling: Sampling
    text: TextStream
    on_text: Callable[[str], None]  # called from the worker thread with each new piece of text
    cancel: threading.Event = field(default_factory=threading.Event)
    steps: int = 0  # diffusion steps run (denoising passes), for the metrics and the reply

    def offer(self, final_ids: list[int]) -> None:
        """The generation's hook: hand out the new text of the final tokens so far; raise to end it early."""
        piece = self.text.update(final_ids)
        if piece:
            self.on_text(piece)
        if self.cancel.is_set():
            raise Cancelled
        if self.text.finish_reason:
            raise Finished

    def check_cancel(self) -> None:
        if self.cancel.is_set():
            raise Cancelled


class Generator(Protocol):
    KIND: str  # "causal", "dream" or "diffusion_gemma"
    STREAMING: str  # how its streams arrive: "token", "final-prefix" or "final-block"

    def run(self, job: Job) -> None:
        """Generate in the calling (worker) thread, feeding `job.offer`; ends by returning or raising
        Cancelled or Finished. The caller then calls `job.text.finish()`."""


def run_job(generator: Generator, job: Job) -> None:
    """The worker thread's whole task: generate, then flush the text. Cancelled propagates."""
    if job.sampling.seed is not None:
        import torch

        torch.manual_seed(job.sampling.seed)  # one generation at a time: the global generator is this job's
    try:
        generator.run(job)
    except Finished:
        pass
    piece = job.text.finish("length")
    if piece:
        job.on_text(piece)
