"""The unified-llm router: one aiohttp app on :8080 in front of the vLLM and llama.cpp engines."""
