"""The Transformers engine: an OpenAI-compatible server over Hugging Face Transformers for what vLLM and llama.cpp do
not run: Dream-family diffusion models (remote code, `diffusion_generate`), DiffusionGemma (block diffusion) and any
local causal LM (`generate`). One generation at a time, a bounded queue. `python -m engines.transformers_server -h`;
docs/transformers-engine.md."""
