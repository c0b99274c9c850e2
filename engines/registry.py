"""The engines the project knows, by the one spelling used everywhere (YAML, supervisord, labels, URLs): each
one's adapter (engines/adapter.py), how a model spec plus engine settings become the exact launch the launcher
runs, and which engine a model path given without one is for."""

from __future__ import annotations

from pathlib import Path

from engines import llamacpp, model_files, transformers, vllm
from engines.adapter import EngineAdapter
from engines.spec import ENGINE_NAMES, LaunchPlan, ModelSpec

ADAPTERS: dict[str, EngineAdapter] = {adapter.NAME: adapter for adapter in (vllm, llamacpp, transformers)}
assert tuple(ADAPTERS) == ENGINE_NAMES
assert model_files.BY_ENGINE == {name: adapter.FILES for name, adapter in ADAPTERS.items()}  # the launcher's view


def launch_plan(spec: ModelSpec, port: int, extra_args: list[str], env: dict[str, str],
                binary: str | None = None) -> LaunchPlan:
    """The command line and environment for serving `spec` on `port` (settings `env` over the engine's own)."""
    adapter = ADAPTERS[spec.engine]
    argv = adapter.build_command(spec, port, extra_args, binary)
    return LaunchPlan(spec=spec, port=port, argv=argv, env={**adapter.default_env(), **adapter.spec_env(spec), **env})


def guess_engine(path: Path) -> str:
    """The engine whose model format `path`'s name shows; else the first engine (vLLM: a model folder)."""
    return next((name for name, adapter in ADAPTERS.items() if adapter.FILES.looks_like_model(path)),
                ENGINE_NAMES[0])
