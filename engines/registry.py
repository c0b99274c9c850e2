"""The engines the project knows, by the one spelling used everywhere (YAML, supervisord, labels, URLs): each
one's adapter (engines/adapter.py), and how a model spec plus engine settings become the exact launch the
launcher runs."""

from __future__ import annotations

from engines import llamacpp, vllm
from engines.adapter import EngineAdapter
from engines.spec import ENGINE_NAMES, LaunchPlan, ModelSpec

ADAPTERS: dict[str, EngineAdapter] = {adapter.NAME: adapter for adapter in (vllm, llamacpp)}
assert tuple(ADAPTERS) == ENGINE_NAMES


def launch_plan(spec: ModelSpec, port: int, extra_args: list[str], env: dict[str, str],
                binary: str | None = None) -> LaunchPlan:
    """The command line and environment for serving `spec` on `port` (settings `env` over the engine's own)."""
    adapter = ADAPTERS[spec.engine]
    argv = adapter.build_command(spec, port, extra_args, binary)
    return LaunchPlan(spec=spec, port=port, argv=argv, env={**adapter.default_env(), **env})

