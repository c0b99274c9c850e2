"""The engines the project knows, by the one spelling used everywhere (YAML, supervisord, labels, URLs), and
how a model spec plus engine settings become the exact launch the launcher runs."""

from __future__ import annotations

from engines import build, llamacpp, vllm
from engines.spec import ENGINE_NAMES, LaunchPlan, ModelSpec

ADAPTERS = {"vllm": vllm, "llamacpp": llamacpp}
assert tuple(ADAPTERS) == ENGINE_NAMES


def launch_plan(spec: ModelSpec, port: int, extra_args: list[str], env: dict[str, str],
                binary: str | None = None) -> LaunchPlan:
    """The command line and environment for serving `spec` on `port` (settings `env` over the engine's own)."""
    if spec.engine == "llamacpp":
        argv = llamacpp.build_command(spec, port, extra_args, build.find_binary(binary))
    else:
        argv = vllm.build_command(spec, port, extra_args)
    return LaunchPlan(spec=spec, port=port, argv=argv, env={**ADAPTERS[spec.engine].default_env(), **env})
