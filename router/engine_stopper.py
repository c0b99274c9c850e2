"""Every way one engine's model goes away: an unload that drains its requests, giving up after a failed load or
a crash loop, and going idle when an abandoned load had already stopped the served model. Each ends with the
engine's process tree gone and the shared memory ledger told.

The engine's manager (router/lifecycle.py) owns the state; what this uses of it is `StopHost`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from engines.process_group import forget_group
from engines.spec import ModelSpec, Resume, clear_plan
from router.engine_state import State, StateMachine
from router.errors import StateNotRecorded
from router.supervisor import SupervisorError

if TYPE_CHECKING:
    from router.admission import Admission
    from router.config import RouterSettings
    from router.engine_details import EngineDetails
    from router.engine_process import EngineProcess
    from router.memory_guard import MemoryLedger

log = logging.getLogger(__name__)


class StopHost(Protocol):
    """The engine's manager as its stops see it."""
    name: str
    run_dir: Path
    details: "EngineDetails"
    machine: StateMachine
    proc: "EngineProcess"
    admission: "Admission"
    ledger: "MemoryLedger"
    router_settings: "RouterSettings"
    exclusive: asyncio.Lock  # held by every load and unload
    state: State


class EngineStopper:
    def __init__(self, engine: StopHost):
        self.engine = engine

    async def stop_process(self) -> None:
        """Stop the engine's whole process tree and wait until it is gone; the ledger then waits for the memory
        to come back before its next check."""
        engine = self.engine
        engine.details.process = await engine.proc.stop_tree()
        engine.ledger.stopped(engine.name)

    async def drain(self) -> None:
        """Let the requests in flight finish, for at most router.drain_seconds."""
        await self.engine.admission.drain(self.engine.router_settings.drain_seconds)

    async def unload(self, reason: str, resume: bool, on_request: bool) -> None:
        """Stop the model once the requests in flight finish. `resume` (an idle unload) lets the next request
        bring it back, also after a router restart; an unload `on_request` outlives restarts (the configured
        default does not come back)."""
        engine = self.engine
        async with engine.exclusive:
            d, now = engine.details, time.time()
            remembered = Resume(d.spec, reason, now) if resume and d.spec else None
            try:  # the intent first
                clear_plan(engine.run_dir, engine.name, on_request=on_request, resume=remembered)
            except OSError as exc:
                raise StateNotRecorded(f"unload of {engine.name}", engine.run_dir, exc) from exc
            d.resume_spec = remembered.spec if remembered else None
            d.unload_reason, d.unloaded_at, d.loading_since = reason, now, None
            if engine.state is not State.IDLE:
                engine.machine.move(State.STOPPING, reason)
            try:
                await self.drain()
                await self.stop_process()
            except SupervisorError as exc:
                d.last_error = f"could not stop the engine: {exc}"
                engine.machine.move(State.ERROR, d.last_error)
                raise
            forget_group(engine.run_dir, engine.name)
            d.went_idle()
            d.last_error = None
            if not engine.machine.move(State.IDLE, "the process tree is gone"):
                engine.admission.review()

    async def abandoned(self, reason: str, previous: ModelSpec | None) -> None:
        """A load that every client left after it had stopped the served model `previous`: the engine goes idle,
        and the next request for `previous` brings it back."""
        engine, d, now = self.engine, self.engine.details, time.time()
        await self.stop_process()
        remembered = Resume(previous, reason, now) if previous else None
        clear_plan(engine.run_dir, engine.name, resume=remembered)
        forget_group(engine.run_dir, engine.name)
        d.went_idle()
        d.resume_spec, d.unload_reason, d.unloaded_at = previous, reason, now
        engine.machine.move(State.IDLE, reason)

    async def give_up(self, message: str, cause: str = "the load failed") -> None:
        """After a failed load or a crash loop: stop retries, forget the model so a restart does not repeat the
        failure."""
        engine = self.engine
        log.error("%s: %s", engine.name, message)
        try:
            await self.stop_process()
        except SupervisorError as exc:
            log.error("%s: could not stop after failed load: %s", engine.name, exc)
        clear_plan(engine.run_dir, engine.name)
        engine.details.forget_model()
        engine.details.last_error = message
        engine.machine.move(State.ERROR, cause)
