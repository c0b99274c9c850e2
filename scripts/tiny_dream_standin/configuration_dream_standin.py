"""STAND-IN for Dream's configuration_dream.py (DreamLM/Dream): a tiny config for a random-weight test model.
Not Dream. It exists so the engine's Dream path (remote code, `diffusion_generate`) runs offline."""

from transformers import PretrainedConfig


class DreamStandinConfig(PretrainedConfig):
    model_type = "Dream"

    def __init__(self, vocab_size=2001, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=2, max_position_embeddings=4096, mask_token_id=2000, pad_token_id=2,
                 bos_token_id=1, eos_token_id=2, **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.max_position_embeddings = max_position_embeddings
        self.mask_token_id = mask_token_id
        super().__init__(pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id, **kwargs)
