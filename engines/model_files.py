"""What the launcher checks before it execs an engine, and the router before it accepts a load: that the model
is the kind of file or folder the engine reads, and that the engine's binary is there. Standard library only:
the launcher runs this at every engine start, so a model switch does not wait for heavier imports.

Each engine's adapter (engines/adapter.py) names its `EngineFiles` here; `BY_ENGINE` is the launcher's view of
them, which lets it leave the adapters (and pydantic) unimported. engines/registry.py checks that they agree.
"""

from __future__ import annotations

from pathlib import Path


class EngineFiles:
    """An engine's model format and binary."""

    def looks_like_model(self, path: Path) -> bool:
        """Whether `path`'s name marks it as this format (a guess for a path loaded without an engine; it reads
        nothing from disk, so it answers the same for a path on another machine)."""
        raise NotImplementedError

    def format_problem(self, path: Path) -> str | None:
        """A reason the existing `path` is not this format, or None."""
        raise NotImplementedError

    def missing_binary(self, binary: str) -> str:
        """What to say when the engine's executable `binary` is missing."""
        raise NotImplementedError

    def check_model(self, path: Path) -> str | None:
        """A reason `path` cannot be a model of this format, or None. (A corrupt body is the engine's to report.)"""
        if not path.exists():
            return (f"{path} does not exist: models are read from disk only (the engines run with the Hugging Face "
                    f"hub offline); fetch it first with scripts/download_model.py")
        return self.format_problem(path)


class HuggingFaceFolder(EngineFiles):
    """vLLM's: a Hugging Face-format folder, run on the router's own Python."""

    def looks_like_model(self, path: Path) -> bool:
        return False  # a folder's name carries no mark; registry.guess_engine gives unmarked paths to vLLM

    def format_problem(self, path: Path) -> str | None:
        if not path.is_dir():
            return f"{path} is not a model folder (vLLM needs a Hugging Face-format directory)"
        if not ((path / "config.json").is_file() or (path / "params.json").is_file()):
            return f"{path} has no config.json or params.json"
        return None

    def missing_binary(self, binary: str) -> str:
        return f"the Python that runs vLLM is not at {binary}; run scripts/setup.sh"


class GgufFile(EngineFiles):
    """llama.cpp's: one .gguf file, served by llama-server."""

    def looks_like_model(self, path: Path) -> bool:
        return path.suffix == ".gguf"

    def format_problem(self, path: Path) -> str | None:
        return None if path.is_file() else f"{path} is not a file (llama.cpp needs a .gguf file)"

    def missing_binary(self, binary: str) -> str:
        return (f"llama-server binary not found at {binary}; run scripts/setup.sh or set LLAMA_SERVER_BIN to an "
                f"existing llama-server")


class TransformersFolder(EngineFiles):
    """The Transformers engine's: a Hugging Face-format folder, run by engines/transformers_server on a Python with
    transformers (the router's own, or the settings' `binary`)."""

    def looks_like_model(self, path: Path) -> bool:
        return False  # a folder's name carries no mark: a catalog entry names this engine

    def format_problem(self, path: Path) -> str | None:
        if not path.is_dir():
            return f"{path} is not a model folder (the Transformers engine needs a Hugging Face-format directory)"
        if not (path / "config.json").is_file():
            return f"{path} has no config.json"
        return None

    def missing_binary(self, binary: str) -> str:
        return (f"the Python that runs the Transformers engine is not at {binary}; run scripts/setup.sh, or fix the "
                f"engine's `binary` setting (docs/transformers-engine.md)")


HUGGING_FACE_FOLDER = HuggingFaceFolder()
TRANSFORMERS_FOLDER = TransformersFolder()
GGUF_FILE = GgufFile()
BY_ENGINE: dict[str, EngineFiles] = {"vllm": HUGGING_FACE_FOLDER, "llamacpp": GGUF_FILE,
                                     "transformers": TRANSFORMERS_FOLDER}
