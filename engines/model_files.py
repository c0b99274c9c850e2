"""What the launcher checks before it execs an engine, and the router before it accepts a load: that the model
is the kind of file or folder the engine reads, and that the engine's binary is there. Standard library only:
the launcher runs this at every engine start, so a model switch does not wait for heavier imports."""

from __future__ import annotations

from pathlib import Path

MISSING_BINARY = {
    "vllm": "the Python that runs vLLM is not at {path}; run scripts/setup.sh",
    "llamacpp": "llama-server binary not found at {path}; run scripts/setup.sh or set LLAMA_SERVER_BIN to an "
                "existing llama-server",
}


def check_model(engine: str, path: Path) -> str | None:
    """A reason `path` cannot be a model for `engine`, or None. (A corrupt body is the engine's to report.)"""
    if not path.exists():
        return (f"{path} does not exist: models are read from disk only (the engines run with the Hugging Face "
                f"hub offline); fetch it first with scripts/download_model.py")
    if engine == "llamacpp":
        return None if path.is_file() else f"{path} is not a file (llama.cpp needs a .gguf file)"
    if not path.is_dir():
        return f"{path} is not a model folder (vLLM needs a Hugging Face-format directory)"
    if not ((path / "config.json").is_file() or (path / "params.json").is_file()):
        return f"{path} has no config.json or params.json"
    return None
