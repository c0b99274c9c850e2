"""STAND-IN for Dream's modeling_dream.py (DreamLM/Dream): a tiny bidirectional transformer with random weights.
Not Dream. Its `diffusion_generate` (generation_utils_standin.py) honours Dream's contract, so the engine's Dream path
runs offline; a real Dream or ELYZA-Diffusion checkpoint brings its own code instead."""

from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_dream_standin import DreamStandinConfig
from .generation_utils_standin import DreamStandinGenerationMixin


@dataclass
class DreamStandinOutput(ModelOutput):
    logits: torch.FloatTensor | None = None


class DreamStandinModel(PreTrainedModel, DreamStandinGenerationMixin):
    config_class = DreamStandinConfig
    base_model_prefix = "model"
    _no_split_modules = []

    def __init__(self, config: DreamStandinConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.embed_positions = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        layer = nn.TransformerEncoderLayer(config.hidden_size, config.num_attention_heads, config.intermediate_size,
                                           dropout=0.0, batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, config.num_hidden_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.hidden_size)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def forward(self, input_ids, attention_mask=None, position_ids=None, **kwargs) -> DreamStandinOutput:
        """Dream's call shape: `self(x, attention_mask, tok_idx)`; attention is bidirectional ("full")."""
        if position_ids is None:
            position_ids = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        hidden = self.embed_tokens(input_ids) + self.embed_positions(position_ids)
        mask = None
        if isinstance(attention_mask, torch.Tensor) and attention_mask.dim() == 4:  # True = may attend
            mask = ~attention_mask[:, 0].repeat_interleave(self.config.num_attention_heads, dim=0)
        hidden = self.layers(hidden, mask=mask)
        return DreamStandinOutput(logits=self.lm_head(self.norm(hidden)).float())
