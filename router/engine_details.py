"""What /v1/status reports of one engine beside its state, kept by its manager (router/lifecycle.py)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from engines import memory
from engines.spec import LaunchPlan, ModelSpec
from router.supervisor import ProcessInfo


@dataclass
class EngineDetails:
    spec: ModelSpec | None = None  # the model served, or being loaded
    plan: LaunchPlan | None = None  # the launch in effect: the running process's port and arguments
    process: ProcessInfo | None = None
    last_error: str | None = None
    load_seconds: float | None = None
    loaded_at: float | None = None
    loading_since: float | None = None
    resume_spec: ModelSpec | None = None  # the model an idle unload took away; the next request brings it back
    unload_reason: str | None = None  # why the engine went idle, e.g. "idle for 300 s"
    unloaded_at: float | None = None
    memory_estimate: memory.MemoryEstimate | None = None  # of the model served or being loaded
    load_phase: str | None = None  # where a running load is: draining, stopping, starting, waiting for readiness
    load_phases: dict[str, float] = field(default_factory=dict)  # seconds per phase of the last (or running) load
    _phase_started: float = 0.0

    def enter_phase(self, phase: str | None) -> None:
        """The running load moves on to `phase` (None: it ended); the phase it leaves gets its seconds."""
        now = time.monotonic()
        if self.load_phase:
            self.load_phases[self.load_phase] = round(now - self._phase_started, 4)
        self.load_phase, self._phase_started = phase, now

    def forget_model(self) -> None:
        """No model is served or loading any more (the last load's figures stay until the engine goes idle)."""
        self.spec = self.plan = self.loading_since = self.memory_estimate = None

    def went_idle(self) -> None:
        self.forget_model()
        self.load_seconds = self.loaded_at = None
