"""One engine's model lifecycle, as the rest of the router sees it: the façade over the parts below, and the
owner of the state they share (the state machine, what /v1/status reports, the lock every load and unload
holds). Each part has one responsibility and a declared view of the manager:

- the load queue (router/load_queue.py): order, joining, which loads clients may leave, expected waits,
  remembered failed on-demand loads;
- the load runner (router/load_runner.py): one load at a time, residency, memory reservation, failure;
- the stopper (router/engine_stopper.py): unloads that drain, giving up, going idle;
- admission (router/admission.py): the requests waiting and in flight, behind `AdmissionHost`;
- the monitor (router/monitor.py): what supervisord does outside the router's loads, the crash-loop guard and
  the stuck-loading bound, behind `Observed`;
- restore at router start (router/restore.py);
- the memory ledger shared by every engine (router/memory_guard.py).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Callable

import aiohttp

from engines.registry import ADAPTERS, launch_plan
from engines.spec import LaunchPlan, ModelSpec, engine_of, instance_index
from router import restore
from router.admission import Admission, Notify
from router.config import EngineSettings, RouterSettings
from router.engine_details import EngineDetails
from router.engine_process import EngineProcess, Probe
from router.engine_state import State, StateMachine
from router.engine_stopper import EngineStopper
from router.lifecycle_events import LifecycleEvents, NoEvents
from router.load_queue import FailedLoad, LoadQueue, PendingLoad
from router.load_runner import LoadRunner
from router.memory_guard import MemoryLedger
from router.monitor import EngineMonitor
from router.supervisor import Supervisor


class EngineManager:
    def __init__(self, name: str, settings: EngineSettings, router: RouterSettings, supervisor: Supervisor,
                 run_dir: Path, http: aiohttp.ClientSession | None = None, probe: Probe | None = None,
                 events: LifecycleEvents | None = None, ledger: MemoryLedger | None = None):
        # `name`: this process's (an engine instance: `llamacpp`, `llamacpp-1`...): its supervisord program, run
        # files, log and metric labels; `engine`: which engine it runs
        self.name, self.engine, self.index, self.run_dir = name, engine_of(name), instance_index(name), run_dir
        self.adapter = ADAPTERS[self.engine]
        self.proc = EngineProcess(name, supervisor, run_dir, self.adapter.READY_PATHS, http, probe,
                                  self.adapter.REASON_LINES)
        self.events = events or NoEvents()
        self.monitor = EngineMonitor(self)
        self.configure(settings, router)
        self.machine = StateMachine(name, on_move=self._moved)
        self.details = EngineDetails()
        self.exclusive = asyncio.Lock()  # held by every load and unload; the monitor takes it to stop a crash loop
        self.queue = LoadQueue(name)
        self.admission = Admission(self)
        self.loader = LoadRunner(self)
        self.stopper = EngineStopper(self)
        # the memory ledger every engine shares; a private one for a lone manager
        self.ledger = ledger or MemoryLedger(settle_seconds=router.memory_settle_seconds)
        self.others_memory: Callable[[], dict[str, int]] = dict  # other engines' RSS, for refusal messages
        self.ready_pid = 0  # the engine PID that last answered its readiness URLs
        self._background: set[asyncio.Task] = set()

    def configure(self, settings: EngineSettings, router: RouterSettings) -> None:
        """Take (re)loaded settings. They shape the next launch; a running engine keeps its plan. New crash-loop
        limits start their count afresh."""
        old = getattr(self, "router_settings", None)
        if old is not None and (old.crash_restarts, old.crash_window_seconds) != (
                router.crash_restarts, router.crash_window_seconds):
            self.monitor.forget_crashes()
        self.settings, self.router_settings = settings, router

    @property
    def state(self) -> State:
        return self.machine.state

    @property
    def port(self) -> int:
        plan = self.details.plan
        return plan.port if plan else self.settings.instance_port(self.index)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def plan_for(self, spec: ModelSpec) -> LaunchPlan:
        s = self.settings
        return launch_plan(spec, s.instance_port(self.index), s.extra_args, s.env, s.binary)

    def _moved(self, source: State, target: State) -> None:
        self.events.engine_moved(self.name, source, target)
        self.admission.review()

    # ---- requests (router/admission.py) ------------------------------------------------------------------

    def admitted(self, wanted: str | None, load: ModelSpec | None, timeout: float, notify: Notify | None = None):
        """A place on the engine for one request (`Admission.admitted`)."""
        return self.admission.admitted(wanted, load, timeout, notify)

    def will_serve(self, served_name: str) -> bool:
        return self.admission.will_serve(served_name)

    def known_specs(self) -> list[ModelSpec]:
        return self.admission.known_specs()

    def not_loaded(self, requested: str | None):
        return self.admission.not_loaded(requested)

    @property
    def in_flight(self) -> int:
        return self.admission.in_flight

    @property
    def waiting(self) -> int:
        return self.admission.waiting

    def vacant(self) -> bool:
        """No model, nothing queued, no load or unload running: free for any model."""
        return (self.details.spec is None and not self.queue and not self.exclusive.locked()
                and self.state in (State.IDLE, State.ERROR))

    def evictable(self) -> bool:
        """Loaded, nobody using or waiting for it, past its residency: stopping it now costs no one anything."""
        return (self.state is State.LOADED and not self.in_flight and not self.waiting and not self.queue
                and not self.exclusive.locked()
                and time.monotonic() - self.loader.resident_since >= self.router_settings.min_residency_seconds)

    @property
    def holding_until(self) -> float | None:
        """While a swap waits out the served model's residency."""
        return self.loader.holding_until

    # ---- loads (router/load_queue.py, router/load_runner.py) --------------------------------------------

    async def load(self, spec: ModelSpec, cause: str = "load requested", force: bool = False) -> float:
        """Make `spec` the served model after the loads queued before it; join a queued load of the same model;
        return at once (0 s) when it is already served with the same launch and nothing is queued. `force`
        loads it even when its memory estimate does not fit. An admin's load also forgets that an on-demand load
        of `spec` failed."""
        self.queue.forget_failure(spec.served_name)
        return await asyncio.shield(self.request_load(spec, cause, force=force))

    def request_on_demand(self, spec: ModelSpec) -> None:
        self.request_load(spec, "a request asked for it", on_demand=True)

    def request_load(self, spec: ModelSpec, cause: str, on_demand: bool = False, force: bool = False
                     ) -> asyncio.Future:
        """Queue a load of `spec`, or join the one queued; a future of its seconds."""
        if pending := self.queue.find(spec):  # join it
            pending.on_demand = pending.on_demand and on_demand  # an explicit load keeps it
            pending.force = pending.force or force
            return pending.task
        if (not self.queue and self.state is State.LOADED and self._process_ready()
                and self.plan_for(spec).same_launch(self.details.plan)):
            done = asyncio.get_running_loop().create_future()
            done.set_result(0.0)
            return done
        pending = PendingLoad(spec, on_demand=on_demand, force=force)
        pending.task = asyncio.ensure_future(self.loader.run(pending, cause))
        pending.task.add_done_callback(_retrieve)  # an on-demand load may have no one awaiting it
        self.queue.add(pending)
        return pending.task

    def _process_ready(self) -> bool:
        proc = self.details.process
        return bool(proc and proc.pid and proc.pid == self.ready_pid)

    def drop_abandoned_loads(self) -> None:
        """Every client waiting for some on-demand loads hung up: cancel those the queue's rule lets go."""
        for pending in self.queue.abandoned_by(self.admission.wanted()):
            pending.task.cancel()

    def known_failure(self, spec: ModelSpec) -> FailedLoad | None:
        """The remembered failed on-demand load of `spec`, unless its entry or file changed since."""
        return self.queue.known_failure(spec)

    # ---- unloads (router/engine_stopper.py) ----------------------------------------------------------------

    async def unload(self, reason: str = "unloaded on request", resume: bool = False, on_request: bool = True
                     ) -> None:
        """Stop the engine's model once the requests in flight finish (`EngineStopper.unload`)."""
        await asyncio.shield(self.spawn(self.stopper.unload(reason, resume, on_request and not resume)))

    def unload_if_idle(self) -> None:
        idle_after = self.settings.idle_unload_seconds
        if (idle_after and self.state is State.LOADED and not self.in_flight and not self.waiting
                and not self.queue and not self.exclusive.locked()
                and time.monotonic() - self.admission.last_used >= idle_after):
            self.spawn(self.unload(reason=f"idle for {idle_after:g} s", resume=True))

    async def give_up(self, message: str, cause: str = "the load failed") -> None:
        await self.stopper.give_up(message, cause)

    # ---- start, shutdown, background work ---------------------------------------------------------------

    async def restore(self, default: ModelSpec | None) -> None:
        """At router start: pick up where the run folder says the engine was (router/restore.py)."""
        await restore.restore(self, default)

    def spawn(self, coro) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def close(self) -> None:
        """Router shutdown: interrupt loads and unloads. The run folder keeps what they were for, so the next
        router start resumes them."""
        tasks = [p.task for p in self.queue if p.task] + list(self._background)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ---- what the monitor (router/monitor.py) uses ------------------------------------------------------

    def owned(self) -> bool:
        """True while a load or unload owns the state (the monitor only observes outside them)."""
        return self.exclusive.locked() or bool(self.queue)

    def owned_by_queue(self) -> bool:
        """A load is queued or running (inside `exclusive`, where the lock itself says nothing)."""
        return bool(self.queue)

    async def refresh(self) -> None:
        """Follow changes made outside the router."""
        await self.monitor.refresh()

    @property
    def restarts(self) -> int:
        return self.monitor.restarts

    def observe(self, target: State, cause: str) -> None:
        """A change the monitor saw outside the router's loads and unloads."""
        d = self.details
        if target is State.LOADED and self.state not in (State.LOADING, State.LOADED):
            self.machine.move(State.LOADING, "the engine process started")
        if target is State.LOADING and self.state is not State.LOADING:
            d.loading_since = time.time()
        if target is State.LOADED and self.state is not State.LOADED:
            d.loaded_at, d.loading_since, d.last_error = time.time(), None, None
            self.admission.last_used = time.monotonic()
        self.machine.move(target, cause)


def _retrieve(task: asyncio.Task) -> None:
    """Mark a task's outcome as seen (its waiters heard of a failure; the log has it too)."""
    if not task.cancelled():
        task.exception()
