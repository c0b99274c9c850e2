"""The model an engine should serve: written by the router, read by the launcher, kept across restarts."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ENGINE_NAMES = ("vllm", "llamacpp")


@dataclass(frozen=True)
class ModelSpec:
    engine: str
    path: str  # absolute path of a model folder (vLLM) or a .gguf file (llama.cpp)
    served_name: str  # the model name the engine answers to
    options: dict[str, Any] = field(default_factory=dict)  # typed engine options, already validated
    catalog_name: str | None = None  # the models.yaml entry it came from, if any (re-resolved on reload)
    overrides: dict[str, Any] = field(default_factory=dict)  # options the load request set over the catalog's

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelSpec":
        return cls(**json.loads(text))


def spec_file(run_dir: Path, engine: str) -> Path:
    return run_dir / "engines" / f"{engine}.json"


def read_spec(run_dir: Path, engine: str) -> ModelSpec | None:
    try:
        return ModelSpec.from_json(spec_file(run_dir, engine).read_text())
    except FileNotFoundError:
        return None


def write_spec(run_dir: Path, spec: ModelSpec) -> None:
    """Atomically replace the engine's desired model (a crash mid-write never leaves half a file)."""
    _unloaded_marker(run_dir, spec.engine).unlink(missing_ok=True)
    _resume_file(run_dir, spec.engine).unlink(missing_ok=True)
    _write_atomically(spec_file(run_dir, spec.engine), spec.to_json())


def clear_spec(run_dir: Path, engine: str, on_request: bool = False) -> None:
    """Forget the engine's model; `on_request` (an explicit unload) also keeps the default from coming back
    when the router restarts."""
    spec_file(run_dir, engine).unlink(missing_ok=True)
    _resume_file(run_dir, engine).unlink(missing_ok=True)
    if on_request:
        marker = _unloaded_marker(run_dir, engine)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()


@dataclass(frozen=True)
class Resume:
    """A model unloaded for idleness, which the engine's next request brings back (kept across restarts)."""
    spec: ModelSpec
    reason: str
    unloaded_at: float


def write_resume(run_dir: Path, resume: Resume) -> None:
    _write_atomically(_resume_file(run_dir, resume.spec.engine), json.dumps(asdict(resume), indent=2))


def read_resume(run_dir: Path, engine: str) -> Resume | None:
    try:
        raw = json.loads(_resume_file(run_dir, engine).read_text())
        return Resume(spec=ModelSpec(**raw["spec"]), reason=raw["reason"], unloaded_at=raw["unloaded_at"])
    except (OSError, ValueError, KeyError, TypeError):  # none, or from another version: nothing to resume
        return None


def unloaded_on_request(run_dir: Path, engine: str) -> bool:
    return _unloaded_marker(run_dir, engine).exists()


def _unloaded_marker(run_dir: Path, engine: str) -> Path:
    return run_dir / "engines" / f"{engine}.unloaded"


def _resume_file(run_dir: Path, engine: str) -> Path:
    return run_dir / "engines" / f"{engine}.resume.json"


def _write_atomically(target: Path, text: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, target)
