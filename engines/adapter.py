"""What every engine provides, in one place: `EngineAdapter`. Each engine's module is its adapter
(engines/vllm.py, engines/llamacpp.py) and engines/registry.py holds them by name; the rest of the project asks
the adapter instead of testing the engine's name."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from pydantic import BaseModel

    from engines.memory import MemoryEstimate
    from engines.model_files import EngineFiles
    from engines.spec import LaunchPlan, ModelSpec


@runtime_checkable
class EngineAdapter(Protocol):
    NAME: str  # its one spelling: models.yaml, supervisord's program, run/engines/<name>.json, labels, URLs
    Options: type[BaseModel]  # its typed model options (a catalog entry's or a load request's `options`)
    READY_PATHS: tuple[str, ...]  # GET paths that all answer 200 once the model is served
    METRICS_PATH: str  # its own Prometheus metrics
    REUSABLE_AFTER_STREAM: bool  # whether a pooled connection may carry another request after a stream
    FILES: EngineFiles  # its model format and binary, as the launcher and the router check them
    # log lines that say why the engine stopped, quoted in a failure even when later output (a dying process's
    # shutdown noise) has pushed them out of the last lines
    REASON_LINES: re.Pattern[str]

    def build_command(self, spec: ModelSpec, port: int, extra_args: list[str], binary: str | None = None
                      ) -> list[str]:
        """The argv serving `spec` on `port`; `binary` is the settings' executable (None: the engine's own)."""

    def default_env(self) -> dict[str, str]:
        """Environment it needs on this machine, under the settings' `env`."""

    def spec_env(self, spec: ModelSpec) -> dict[str, str]:
        """Environment the model's own options call for (vLLM's distributed runtime), under the settings' `env`."""

    def distributed(self, spec: ModelSpec) -> dict | None:
        """How the model spans more than this process (docs/distributed.md), for /v1/status; None when it does
        not. A `rpc_workers` list names endpoints the router checks (router/distributed.py)."""

    def waiting_on(self, spec: ModelSpec, log: str) -> str | None:
        """What a load of `spec` waits for outside this box, read from the engine's log since its launch (vLLM's
        head: the other boxes to join), for /v1/status and a load that times out; None when nothing is known."""

    def estimate_memory(self, plan: LaunchPlan) -> MemoryEstimate:
        """The memory `plan` will take once loaded. OSError or ValueError when the model cannot be read."""
