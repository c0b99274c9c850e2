"""One engine's loads, run one at a time in the load queue's order: the served model's residency before an
on-demand swap, the memory check and reservation in the shared ledger, the plan written first, then drain,
stop, start and wait until the new process answers. A failed load stops the engine and, when it was on demand,
is remembered and brings back the model served before; a load every client left is abandoned (the rule is the
load queue's, router/load_queue.py).

The engine's manager (router/lifecycle.py) owns the state and queues the loads; what this uses of it is
`LoadHost`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol

from engines import memory
from engines.spec import LaunchPlan, ModelSpec, write_plan
from router.engine_state import State, StateMachine
from router.errors import ApiError, LoadFailed, StateNotRecorded
from router.load_queue import PendingLoad
from router.memory_guard import InsufficientMemory, Reservation
from router.metrics import sample_tree

if TYPE_CHECKING:
    from engines.adapter import EngineAdapter
    from router.admission import Admission
    from router.config import RouterSettings
    from router.engine_details import EngineDetails
    from router.engine_process import EngineProcess
    from router.engine_stopper import EngineStopper
    from router.lifecycle_events import LifecycleEvents
    from router.load_queue import LoadQueue
    from router.memory_guard import MemoryLedger
    from router.monitor import EngineMonitor
    from router.supervisor import ProcessInfo

log = logging.getLogger(__name__)

KEEPS_COMING_SECONDS = 0.5  # a model whose last request ended this recently is still wanted (residency)
RESIDENCY_POLL_SECONDS = 0.1


class LoadHost(Protocol):
    """The engine's manager as its loads see it."""
    name: str
    adapter: "EngineAdapter"
    run_dir: Path
    details: "EngineDetails"
    machine: StateMachine
    proc: "EngineProcess"
    queue: "LoadQueue"
    admission: "Admission"
    ledger: "MemoryLedger"
    events: "LifecycleEvents"
    monitor: "EngineMonitor"
    stopper: "EngineStopper"
    router_settings: "RouterSettings"
    exclusive: asyncio.Lock  # held by every load and unload
    others_memory: Callable[[], dict[str, int]]  # the other engines' RSS, for refusal messages
    ready_pid: int  # set here: the engine PID that last answered its readiness URLs
    state: State
    base_url: str

    def plan_for(self, spec: ModelSpec) -> LaunchPlan: ...

    def request_load(self, spec: ModelSpec, cause: str) -> asyncio.Future: ...  # queue (or join) a load


class LoadRunner:
    def __init__(self, engine: LoadHost):
        self.engine = engine
        self.reservation: Reservation | None = None  # the running load's, until the engine is ready
        self.resident_since = time.monotonic()  # when the served model's load completed
        self.holding_until: float | None = None  # while a swap waits out the served model's residency

    async def run(self, pending: PendingLoad, cause: str) -> float:
        """Run `pending` once the loads before it are done; whoever waited for its model hears how it went
        before the next load starts."""
        engine, failure = self.engine, None
        try:
            async with engine.exclusive:
                pending.started_at = time.monotonic()
                return await self._load(pending, cause)
        except ApiError as exc:
            failure = exc
            raise
        finally:
            engine.queue.remove(pending)  # (a dropped load has left already)
            engine.admission.review(pending.spec if failure else None, failure)

    async def _load(self, pending: PendingLoad, cause: str) -> float:
        engine, spec, d = self.engine, pending.spec, self.engine.details
        if pending.on_demand:
            await self._residency(spec)
        plan, previous, previous_estimate = engine.plan_for(spec), d.plan, d.memory_estimate
        estimate = await self._reserve_memory(plan, pending.force)
        try:  # the intent first, durably: a router restart from here on resumes this load
            write_plan(engine.run_dir, plan, engine.name)
        except OSError as exc:
            self._release_memory()
            raise StateNotRecorded(f"load of {spec.served_name}", engine.run_dir, exc) from exc
        d.spec, d.loading_since, d.memory_estimate, started = spec, time.time(), estimate, time.monotonic()
        engine.events.model_swapped(engine.name, spec.served_name)
        engine.machine.move(State.LOADING, f"{cause}: {spec.served_name}")
        try:
            pid = await self._replace_process(pending, plan)
        except asyncio.CancelledError:
            d.load_phase = None
            self._release_memory()
            if pending.abandoned:
                await self._abandon(spec, previous, previous_estimate, pending.old_stopped)
            else:
                log.warning("%s: load of %s interrupted (the router is stopping); it stays the wanted model and "
                            "resumes when the router starts", engine.name, spec.served_name)
            raise
        except Exception as exc:
            d.load_phase = None
            self._release_memory()
            engine.events.observe_load(engine.name, spec.served_name, time.monotonic() - started, ok=False)
            message = exc.message if isinstance(exc, ApiError) else f"load failed: {exc!r}"
            await engine.stopper.give_up(message)
            if pending.on_demand:
                self._remember_failure(spec, message, previous)
            if isinstance(exc, LoadFailed):
                raise
            raise LoadFailed(message) from exc
        return await self._loaded(spec, pid, time.monotonic() - started)

    async def _replace_process(self, pending: PendingLoad, plan: LaunchPlan) -> int:
        """Drain, stop the old process, start the plan's and wait until it answers; each phase timed. Returns
        the PID that answered."""
        engine, d = self.engine, self.engine.details
        d.load_phases = {}
        d.enter_phase("draining the requests in flight")
        await engine.stopper.drain()
        pending.old_stopped = True  # from the moment its stop is asked for, the old process may be gone
        d.enter_phase("stopping the engine's previous process")
        await engine.stopper.stop_process()
        d.plan = plan
        d.enter_phase("starting the engine")
        await engine.proc.start()
        d.enter_phase("waiting until the engine answers (loading the model)")
        pid = await engine.proc.wait_ready(engine.base_url, engine.router_settings.load_timeout_seconds, self._saw,
                                           lambda log: engine.adapter.waiting_on(plan.spec, log))
        engine.ready_pid = pid
        d.enter_phase(None)
        return pid

    async def _loaded(self, spec: ModelSpec, pid: int, seconds: float) -> float:
        engine, d = self.engine, self.engine.details
        d.load_seconds, d.loaded_at, d.loading_since = seconds, time.time(), None
        engine.queue.history[spec.served_name] = seconds
        engine.queue.forget_failure(spec.served_name)
        if self.reservation is not None:  # the real memory replaces the estimate in the ledger
            self.reservation = None
            await engine.ledger.measured(engine.name, pid)
        engine.events.observe_load(engine.name, spec.served_name, seconds, ok=True)
        d.last_error = d.unload_reason = d.unloaded_at = d.resume_spec = None
        engine.admission.last_used = time.monotonic()
        engine.monitor.new_launch(pid)  # earlier crashes do not count against it
        self.resident_since, engine.admission.last_request_at = time.monotonic(), float("-inf")  # none of it yet
        log.info("%s: load of %s, where the time went: %s", engine.name, spec.served_name,
                 ", ".join(f"{phase} {seconds:.3f} s" for phase, seconds in d.load_phases.items()))
        engine.machine.move(State.LOADED, f"{spec.served_name} ready after {seconds:.2f} s")
        return seconds

    def _saw(self, info: "ProcessInfo") -> None:
        self.engine.details.process = info
        if self.reservation is not None and info.pid:  # what the loading process takes counts against it
            self.reservation.pid = info.pid

    def _keeps_coming(self) -> bool:
        """Requests for the served model are in flight, waiting, or came within the last moments."""
        engine = self.engine
        served = engine.details.spec.served_name if engine.details.spec else None
        return bool(engine.admission.in_flight or served in engine.admission.wanted()
                    or time.monotonic() - engine.admission.last_request_at < KEEPS_COMING_SECONDS)

    async def _residency(self, spec: ModelSpec) -> None:
        """Before an on-demand swap: the served model keeps the engine for router.min_residency_seconds after
        its load while its requests keep coming, and serves them meanwhile (requests are grouped by model instead
        of swapping back and forth for each). Bounded: the swap starts when the residency is over."""
        engine, current = self.engine, self.engine.details.spec
        if engine.state is not State.LOADED or current is None or current == spec:
            return
        until = self.resident_since + engine.router_settings.min_residency_seconds
        if time.monotonic() >= until or not self._keeps_coming():
            return
        log.info("%s: %s stays for up to %.1f s more while its requests keep coming, then %s is swapped in",
                 engine.name, current.served_name, until - time.monotonic(), spec.served_name)
        self.holding_until = until
        engine.admission.review()  # requests for the served model that queued behind the swap go ahead now
        try:
            while time.monotonic() < until and self._keeps_coming():
                await asyncio.sleep(RESIDENCY_POLL_SECONDS)
        finally:
            self.holding_until = None

    async def _reserve_memory(self, plan: LaunchPlan, force: bool) -> memory.MemoryEstimate | None:
        """The launch's memory estimate, reserved in the shared ledger; InsufficientMemory, before anything is
        stopped, when it does not fit (unless forced). A model whose size cannot be read is not refused here:
        the engine reports it."""
        engine = self.engine
        try:
            estimate = await asyncio.to_thread(engine.adapter.estimate_memory, plan)
        except Exception as exc:  # noqa: BLE001 (a malformed file can fail the GGUF reader in any way)
            log.warning("%s: no memory estimate for %s: %s", engine.name, plan.spec.served_name, exc)
            return None
        process = engine.details.process
        running = process.pid if process and engine.state is not State.IDLE else None
        # what stopping the served model gives back to MemAvailable: its anonymous memory (its mapped files stay
        # page cache, which MemAvailable counts already)
        freed = int((await asyncio.to_thread(sample_tree, running)).anon_bytes) if running else 0
        settings = engine.router_settings
        try:
            self.reservation = await engine.ledger.reserve(
                engine.name, plan.spec.served_name, estimate, settings.memory_reserve_gib, freed,
                engine.others_memory(), force=force, wait_seconds=settings.load_timeout_seconds)
        except InsufficientMemory as exc:
            log.warning("%s: %s", engine.name, exc.message)
            if engine.state is State.IDLE:
                engine.details.last_error = exc.message
            raise
        return estimate

    def _release_memory(self) -> None:
        if self.reservation is not None:
            self.reservation = None
            self.engine.ledger.release(self.engine.name)

    def _remember_failure(self, spec: ModelSpec, message: str, previous: LaunchPlan | None) -> None:
        """A failed on-demand load: remembered (requests do not start it again until its file or entry changes or
        an admin loads it), counted, and the model that was served comes back (when no other load is queued)."""
        engine = self.engine
        engine.queue.remember_failure(spec, message)
        engine.events.on_demand_failed(engine.name, spec.served_name, refused=False)
        if previous is not None and previous.spec != spec and not engine.queue.others_than(spec):
            log.warning("%s: the on-demand load of %s failed; bringing back %s", engine.name, spec.served_name,
                        previous.spec.served_name)
            engine.request_load(previous.spec, f"bringing back the model served before the failed load of "
                                               f"{spec.served_name}")

    async def _abandon(self, spec: ModelSpec, previous: LaunchPlan | None,
                       previous_estimate: memory.MemoryEstimate | None, old_stopped: bool) -> None:
        """A load every client hung up on before it stopped the served model: that model keeps serving (an
        abandoned load never gets past that point; without a served model the engine goes idle)."""
        engine, d = self.engine, self.engine.details
        reason = f"the load of {spec.served_name} was abandoned: every request for it left"
        if previous is not None and not old_stopped:
            write_plan(engine.run_dir, previous, engine.name)
            d.spec, d.plan, d.loading_since, d.memory_estimate = previous.spec, previous, None, previous_estimate
            engine.machine.move(State.LOADED, f"{reason}; {previous.spec.served_name} kept serving")
            return
        await engine.stopper.abandoned(reason, previous.spec if previous else None)
