"""One engine's model lifecycle: loads in arrival order, unloads that drain, restore at start.

The manager is the one owner of the engine's state (`machine`, see router/engine_state.py). Loads and unloads
run one at a time under a lock, in the order they were asked for; while one runs it owns the state. Beside it,
each with its own responsibility and a declared view of the manager:

- the load queue (router/load_queue.py): order, joining, which loads clients may leave, expected waits,
  remembered failed on-demand loads;
- admission (router/admission.py): the requests waiting and in flight, behind `AdmissionHost`;
- the monitor (router/monitor.py): what supervisord does outside the router's loads, the crash-loop guard and
  the stuck-loading bound, behind `Observed`;
- the memory ledger shared by every engine (router/memory_guard.py): a load's check and reservation.

The rest of the router talks to the manager only (`admitted`, `load`, `unload`, `refresh`, `details`...).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

import aiohttp

from engines import memory
from engines.process_group import forget_group, read_record
from engines.registry import ADAPTERS, launch_plan
from engines.spec import (LaunchPlan, ModelSpec, Resume, StateFileError, clear_plan, read_plan, read_resume,
                          unloaded_on_request, write_plan)
from router.config import EngineSettings, RouterSettings
from router.engine_state import State, StateMachine
from router.errors import ApiError, LoadFailed, StateNotRecorded
from router.admission import Admission, Notify
from router.engine_process import EngineProcess, Probe
from router.load_queue import FailedLoad, LoadQueue, PendingLoad
from router.memory_guard import InsufficientMemory, MemoryLedger, Reservation
from router.monitor import RUNNING_STATES, EngineMonitor
from router.metrics import sample_tree
from router.supervisor import ProcessInfo, Supervisor, SupervisorError

log = logging.getLogger(__name__)

KEEPS_COMING_SECONDS = 0.5  # a model whose last request ended this recently is still wanted (residency)
RESIDENCY_POLL_SECONDS = 0.1


@dataclass
class EngineDetails:
    """What /v1/status reports beside the state."""
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


class LifecycleEvents(Protocol):
    """What the lifecycle tells observers (the router's metrics implement it)."""

    def engine_moved(self, engine: str, source: State, target: State) -> None: ...

    def engine_restarted(self, engine: str) -> None: ...

    def observe_load(self, engine: str, model: str, seconds: float, ok: bool) -> None: ...

    def model_swapped(self, engine: str, model: str) -> None: ...

    def waited(self, engine: str, seconds: float) -> None: ...

    def waiting_changed(self, engine: str, by_model: dict[str, int]) -> None: ...

    def on_demand_failed(self, engine: str, model: str, refused: bool) -> None: ...


class NoEvents:
    def engine_moved(self, engine: str, source: State, target: State) -> None:
        pass

    def engine_restarted(self, engine: str) -> None:
        pass

    def observe_load(self, engine: str, model: str, seconds: float, ok: bool) -> None:
        pass

    def model_swapped(self, engine: str, model: str) -> None:
        pass

    def waited(self, engine: str, seconds: float) -> None:
        pass

    def waiting_changed(self, engine: str, by_model: dict[str, int]) -> None:
        pass

    def on_demand_failed(self, engine: str, model: str, refused: bool) -> None:
        pass


class EngineManager:
    def __init__(self, name: str, settings: EngineSettings, router: RouterSettings, supervisor: Supervisor,
                 run_dir: Path, http: aiohttp.ClientSession | None = None, probe: Probe | None = None,
                 events: LifecycleEvents | None = None, ledger: MemoryLedger | None = None):
        self.name = name
        self.adapter = ADAPTERS[name]
        self.run_dir = run_dir
        self.proc = EngineProcess(name, supervisor, run_dir, self.adapter.READY_PATHS, http, probe)
        self.events = events or NoEvents()
        self.monitor = EngineMonitor(self)  # follows what happens outside the router's loads and unloads
        self.configure(settings, router)
        self.machine = StateMachine(name, on_move=self._moved)
        self.details = EngineDetails()
        self._lock = asyncio.Lock()
        self.queue = LoadQueue(name)  # loads queued or running, in arrival order (router/load_queue.py)
        self._background: set[asyncio.Task] = set()
        self.ready_pid = 0  # the engine PID that last answered its readiness URLs
        self.others_memory: Callable[[], dict[str, int]] = dict  # other engines' RSS, for refusal messages
        # the memory ledger every engine shares (router/memory_guard.py); a private one for a lone manager
        self.ledger = ledger or MemoryLedger(settle_seconds=router.memory_settle_seconds)
        self._reservation: Reservation | None = None  # the running load's, until the engine is ready
        self._resident_since = time.monotonic()  # when the served model's load completed
        self.holding_until: float | None = None  # while a swap waits out the served model's residency
        self.admission = Admission(self)  # its requests: waiting and in flight (router/admission.py)

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
        return plan.port if plan else self.settings.port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def plan_for(self, spec: ModelSpec) -> LaunchPlan:
        s = self.settings
        return launch_plan(spec, s.port, s.extra_args, s.env, s.binary)

    def _moved(self, source: State, target: State) -> None:
        self.events.engine_moved(self.name, source, target)
        self.admission.review()

    # ---- requests (router/admission.py) ------------------------------------------------------------------

    def admitted(self, wanted: str | None, load: ModelSpec | None, timeout: float, notify: Notify | None = None):
        """A place on the engine for one request (`Admission.admitted`)."""
        return self.admission.admitted(wanted, load, timeout, notify)

    def request_on_demand(self, spec: ModelSpec) -> None:
        self._request_load(spec, "a request asked for it", on_demand=True)

    def will_serve(self, served_name: str) -> bool:
        return self.admission.will_serve(served_name)

    def known_specs(self) -> list[ModelSpec]:
        return self.admission.known_specs()

    def not_loaded(self, requested: str | None):
        return self.admission.not_loaded(requested)

    def expected_wait(self, wanted: str | None) -> float:
        return self.admission.expected_wait(wanted)

    @property
    def in_flight(self) -> int:
        return self.admission.in_flight

    @property
    def waiting(self) -> int:
        return self.admission.waiting

    @property
    def _waiters(self) -> list:
        return self.admission.waiters

    def _why_waiting(self, wanted: str | None, waited: float) -> str:
        return self.admission.why_waiting(wanted, waited)

    @property
    def last_used(self) -> float:
        """The last request's end, or the last load: the idle-unload clock."""
        return self.admission.last_used

    @last_used.setter
    def last_used(self, value: float) -> None:
        self.admission.last_used = value

    @property
    def last_request_at(self) -> float:
        return self.admission.last_request_at

    @last_request_at.setter
    def last_request_at(self, value: float) -> None:
        self.admission.last_request_at = value

    # ---- start-up --------------------------------------------------------------------------------------------

    async def restore(self, default: ModelSpec | None) -> None:
        """At router start: adopt the engine if it runs the plan on file, else resume what the file (or the
        configured default) asks for. An unreadable state file is reported and ignored."""
        plan, unreadable = None, False
        try:
            plan = read_plan(self.run_dir, self.name)
        except StateFileError as exc:
            log.error("%s: %s", self.name, exc)
            self.details.last_error, unreadable = str(exc), True
        resume = self._read(read_resume) if plan is None else None
        record = self._read(read_record)
        info = self.details.process = await self.proc.info()
        wanted_default = default if default and not unloaded_on_request(self.run_dir, self.name) else None
        if info.state in RUNNING_STATES and plan and record and (record.pid, record.plan_id) == (info.pid, plan.id):
            self.details.spec, self.details.plan, self.monitor.known_pid = plan.spec, plan, info.pid
            self.details.loading_since = time.time()
            self.machine.move(State.LOADING, f"adopted the running engine (pid {info.pid}) at router start")
        elif plan:
            self._request_load(plan.spec, "resuming the model the run folder asks for")
        elif unreadable and wanted_default:  # the plan on file cannot be read: the default replaces what runs
            self._request_load(wanted_default, "the configured default model (the run folder's plan is unreadable)")
        elif info.state in RUNNING_STATES:  # not an unload on request: the default may come back later
            self.spawn(self.unload(reason="no model is wanted at router start", on_request=False))
        elif resume:
            self.details.resume_spec, self.details.unload_reason = resume.spec, resume.reason
            self.details.unloaded_at = resume.unloaded_at
        elif wanted_default:
            self._request_load(wanted_default, "the configured default model")

    def _read(self, reader):
        try:
            return reader(self.run_dir, self.name)
        except StateFileError as exc:
            log.error("%s: %s", self.name, exc)
            self.details.last_error = str(exc)
            return None

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

    # ---- load / unload ---------------------------------------------------------------------------------------

    async def load(self, spec: ModelSpec, cause: str = "load requested", force: bool = False) -> float:
        """Make `spec` the served model after the loads queued before it; join a queued load of the same model;
        return at once (0 s) when it is already served with the same launch and nothing is queued. `force`
        loads it even when its memory estimate does not fit. An admin's load also forgets that an on-demand load
        of `spec` failed."""
        self.queue.forget_failure(spec.served_name)
        return await asyncio.shield(self._request_load(spec, cause, force=force))

    def _request_load(self, spec: ModelSpec, cause: str, on_demand: bool = False, force: bool = False
                      ) -> asyncio.Future:
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
        pending.task = asyncio.ensure_future(self._run_load(pending, cause))
        pending.task.add_done_callback(_retrieve)  # an on-demand load may have no one awaiting it
        self.queue.add(pending)
        return pending.task

    @property
    def _loads(self) -> list[PendingLoad]:
        return self.queue.loads

    def _keep_loads_for(self, wanted: str | None) -> None:
        self.queue.keep_for(wanted)

    def drop_abandoned_loads(self) -> None:
        """Every client waiting for some on-demand loads hung up: cancel those the queue's rule lets go
        (router/load_queue.py)."""
        for pending in self.queue.abandoned_by(self.admission.wanted()):
            pending.task.cancel()

    def _saw(self, info: ProcessInfo) -> None:
        self.details.process = info
        if self._reservation is not None and info.pid:  # what the loading process takes counts against it
            self._reservation.pid = info.pid

    def _process_ready(self) -> bool:
        proc = self.details.process
        return bool(proc and proc.pid and proc.pid == self.ready_pid)

    async def _run_load(self, pending: PendingLoad, cause: str) -> float:
        failure: ApiError | None = None
        try:
            async with self._lock:
                pending.started_at = time.monotonic()
                return await self._load_locked(pending, cause)
        except ApiError as exc:
            failure = exc
            raise
        finally:  # still in arrival order: whoever waited for this model hears how it went before the next load
            self.queue.remove(pending)  # (a dropped load has left already)
            self.admission.review(pending.spec if failure else None, failure)

    async def _load_locked(self, pending: PendingLoad, cause: str) -> float:
        spec = pending.spec
        if pending.on_demand:
            await self._residency(spec)
        plan, previous, previous_estimate = self.plan_for(spec), self.details.plan, self.details.memory_estimate
        estimate = await self._check_memory(plan, pending.force)  # reserves it in the shared ledger
        try:  # the intent first, durably: a router restart from here on resumes this load
            write_plan(self.run_dir, plan)
        except OSError as exc:
            self._release_memory()
            raise StateNotRecorded(f"load of {spec.served_name}", self.run_dir, exc) from exc
        d = self.details
        d.spec, d.loading_since, started = spec, time.time(), time.monotonic()
        d.memory_estimate = estimate
        self.events.model_swapped(self.name, spec.served_name)
        self.machine.move(State.LOADING, f"{cause}: {spec.served_name}")
        old_stopping = False  # from the moment its stop is asked for, the old process may be gone
        try:
            d.load_phases = {}
            d.enter_phase("draining the requests in flight")
            await self._drain()
            old_stopping = pending.old_stopped = True
            d.enter_phase("stopping the engine's previous process")
            d.process = await self.proc.stop_tree()
            self.ledger.stopped(self.name)
            d.plan = plan
            d.enter_phase("starting the engine")
            await self.proc.start()
            d.enter_phase("waiting until the engine answers (loading the model)")
            pid = await self.proc.wait_ready(self.base_url, self.router_settings.load_timeout_seconds, self._saw)
            self.ready_pid = pid
            d.enter_phase(None)
        except asyncio.CancelledError:
            d.load_phase = None
            self._release_memory()
            if pending.abandoned:
                await self._abandon(spec, previous, previous_estimate, old_stopping)
            else:
                log.warning("%s: load of %s interrupted (the router is stopping); it stays the wanted model and "
                            "resumes when the router starts", self.name, spec.served_name)
            raise
        except Exception as exc:
            d.load_phase = None
            self._release_memory()
            self.events.observe_load(self.name, spec.served_name, time.monotonic() - started, ok=False)
            message = exc.message if isinstance(exc, ApiError) else f"load failed: {exc!r}"
            await self.give_up(message)
            if pending.on_demand:
                self._remember_failure(spec, message, previous)
            if isinstance(exc, LoadFailed):
                raise
            raise LoadFailed(message) from exc
        d.load_seconds, d.loaded_at, d.loading_since = time.monotonic() - started, time.time(), None
        self.queue.history[spec.served_name] = d.load_seconds
        self.queue.forget_failure(spec.served_name)
        if self._reservation is not None:  # the real memory replaces the estimate in the ledger
            self._reservation = None
            await self.ledger.measured(self.name, pid)
        self.events.observe_load(self.name, spec.served_name, d.load_seconds, ok=True)
        d.last_error = d.unload_reason = d.unloaded_at = d.resume_spec = None
        self.last_used = time.monotonic()
        self.monitor.new_launch(pid)  # earlier crashes do not count against it
        self._resident_since, self.last_request_at = time.monotonic(), float("-inf")  # no request of it yet
        log.info("%s: load of %s, where the time went: %s", self.name, spec.served_name,
                 ", ".join(f"{phase} {seconds:.3f} s" for phase, seconds in d.load_phases.items()))
        self.machine.move(State.LOADED, f"{spec.served_name} ready after {d.load_seconds:.2f} s")
        return d.load_seconds

    def _keeps_coming(self) -> bool:
        """Requests for the served model are in flight, waiting, or came within the last moments."""
        served = self.details.spec.served_name if self.details.spec else None
        return bool(self.in_flight or served in self.admission.wanted()
                    or time.monotonic() - self.last_request_at < KEEPS_COMING_SECONDS)

    async def _residency(self, spec: ModelSpec) -> None:
        """Before an on-demand swap: the served model keeps the engine for router.min_residency_seconds after
        its load while its requests keep coming, and serves them meanwhile (requests are grouped by model instead
        of swapping back and forth for each). Bounded: the swap starts when the residency is over."""
        current = self.details.spec
        if self.state is not State.LOADED or current is None or current == spec:
            return
        until = self._resident_since + self.router_settings.min_residency_seconds
        if time.monotonic() >= until or not self._keeps_coming():
            return
        log.info("%s: %s stays for up to %.1f s more while its requests keep coming, then %s is swapped in",
                 self.name, current.served_name, until - time.monotonic(), spec.served_name)
        self.holding_until = until
        self.admission.review()  # requests for the served model that queued behind the swap go ahead now
        try:
            while time.monotonic() < until and self._keeps_coming():
                await asyncio.sleep(RESIDENCY_POLL_SECONDS)
        finally:
            self.holding_until = None

    def _remember_failure(self, spec: ModelSpec, message: str, previous: LaunchPlan | None) -> None:
        """A failed on-demand load: remembered (requests do not start it again until its file or entry changes or
        an admin loads it), counted, and the model that was served comes back (when no other load is queued)."""
        self.queue.remember_failure(spec, message)
        self.events.on_demand_failed(self.name, spec.served_name, refused=False)
        others = self.queue.others_than(spec)
        if previous is not None and previous.spec != spec and not others:
            log.warning("%s: the on-demand load of %s failed; bringing back %s", self.name, spec.served_name,
                        previous.spec.served_name)
            self._request_load(previous.spec, f"bringing back the model served before the failed load of "
                                              f"{spec.served_name}")

    def known_failure(self, spec: ModelSpec) -> FailedLoad | None:
        """The remembered failed on-demand load of `spec`, unless its entry or file changed since."""
        return self.queue.known_failure(spec)

    def _release_memory(self) -> None:
        if self._reservation is not None:
            self._reservation = None
            self.ledger.release(self.name)

    async def _abandon(self, spec: ModelSpec, previous: LaunchPlan | None,
                       previous_estimate: memory.MemoryEstimate | None, old_stopping: bool) -> None:
        """A load every client hung up on before it stopped the served model: that model keeps serving (an
        abandoned load never gets past that point; without a served model the engine goes idle)."""
        d, reason = self.details, f"the load of {spec.served_name} was abandoned: every request for it left"
        if previous is not None and not old_stopping:
            write_plan(self.run_dir, previous)
            d.spec, d.plan, d.loading_since, d.memory_estimate = previous.spec, previous, None, previous_estimate
            self.machine.move(State.LOADED, f"{reason}; {previous.spec.served_name} kept serving")
            return
        d.process = await self.proc.stop_tree()
        self.ledger.stopped(self.name)
        now = time.time()
        remembered = Resume(previous.spec, reason, now) if previous else None
        clear_plan(self.run_dir, self.name, resume=remembered)
        forget_group(self.run_dir, self.name)
        d.spec = d.plan = d.loading_since = d.memory_estimate = d.load_seconds = d.loaded_at = None
        d.resume_spec, d.unload_reason, d.unloaded_at = (remembered.spec if remembered else None), reason, now
        self.machine.move(State.IDLE, reason)

    async def _check_memory(self, plan: LaunchPlan, force: bool) -> memory.MemoryEstimate | None:
        """The launch's memory estimate; InsufficientMemory, before anything is stopped, when it does not fit
        (unless forced). A model whose size cannot be read is not refused here: the engine reports it."""
        try:
            estimate = await asyncio.to_thread(memory.estimate, plan)
        except Exception as exc:  # noqa: BLE001 (a malformed file can fail the GGUF reader in any way)
            log.warning("%s: no memory estimate for %s: %s", self.name, plan.spec.served_name, exc)
            return None
        running = self.details.process.pid if self.details.process and self.state is not State.IDLE else None
        freed = int((await asyncio.to_thread(sample_tree, running)).rss_bytes) if running else 0
        settings = self.router_settings
        try:
            self._reservation = await self.ledger.reserve(
                self.name, plan.spec.served_name, estimate, settings.memory_reserve_gib, freed, self.others_memory(),
                force=force, wait_seconds=settings.load_timeout_seconds)
        except InsufficientMemory as exc:
            log.warning("%s: %s", self.name, exc.message)
            if self.state is State.IDLE:
                self.details.last_error = exc.message
            raise
        return estimate

    async def unload(self, reason: str = "unloaded on request", resume: bool = False, on_request: bool = True
                     ) -> None:
        """Stop the engine's model once the requests in flight finish. `resume` (an idle unload) lets the next
        request bring the model back, also after a router restart; otherwise an unload `on_request` outlives
        restarts (the configured default does not come back)."""
        await asyncio.shield(self.spawn(self._run_unload(reason, resume, on_request and not resume)))

    async def _run_unload(self, reason: str, resume: bool, on_request: bool) -> None:
        async with self._lock:
            d, now = self.details, time.time()
            remembered = Resume(d.spec, reason, now) if resume and d.spec else None
            try:  # the intent first
                clear_plan(self.run_dir, self.name, on_request=on_request, resume=remembered)
            except OSError as exc:
                raise StateNotRecorded(f"unload of {self.name}", self.run_dir, exc) from exc
            d.resume_spec = remembered.spec if remembered else None
            d.unload_reason, d.unloaded_at, d.loading_since = reason, now, None
            if self.state is not State.IDLE:
                self.machine.move(State.STOPPING, reason)
            try:
                await self._drain()
                d.process = await self.proc.stop_tree()
                self.ledger.stopped(self.name)
            except SupervisorError as exc:
                d.last_error = f"could not stop the engine: {exc}"
                self.machine.move(State.ERROR, d.last_error)
                raise
            forget_group(self.run_dir, self.name)
            d.spec = d.plan = d.load_seconds = d.loaded_at = d.last_error = d.memory_estimate = None
            if not self.machine.move(State.IDLE, "the process tree is gone"):
                self.admission.review()

    def unload_if_idle(self) -> None:
        idle_after = self.settings.idle_unload_seconds
        if (idle_after and self.state is State.LOADED and not self.in_flight and not self.waiting
                and not self.queue and not self._lock.locked() and time.monotonic() - self.last_used >= idle_after):
            self.spawn(self.unload(reason=f"idle for {idle_after:g} s", resume=True))

    async def _drain(self) -> None:
        """Let requests in flight finish, for at most router.drain_seconds; streams still running after that
        end with an error event when the engine stops."""
        deadline = time.monotonic() + self.router_settings.drain_seconds
        if self.in_flight:
            log.info("%s: waiting for %d in-flight request(s) to finish", self.name, self.in_flight)
        while self.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.in_flight:
            log.warning("%s: stopping with %d request(s) still in flight", self.name, self.in_flight)

    async def give_up(self, message: str, cause: str = "the load failed") -> None:
        """After a failed load or a crash loop: stop retries, forget the model so a restart does not repeat
        the failure."""
        log.error("%s: %s", self.name, message)
        try:
            self.details.process = await self.proc.stop_tree()
            self.ledger.stopped(self.name)
        except SupervisorError as exc:
            log.error("%s: could not stop after failed load: %s", self.name, exc)
        clear_plan(self.run_dir, self.name)
        d = self.details
        d.spec = d.plan = d.loading_since = d.memory_estimate = None
        d.last_error = message
        self.machine.move(State.ERROR, cause)

    # ---- what the monitor (router/monitor.py) uses ------------------------------------------------------

    def owned(self) -> bool:
        """True while a load or unload owns the state (the monitor only observes outside them)."""
        return self._lock.locked() or bool(self.queue)

    def owned_by_queue(self) -> bool:
        """A load is queued or running (inside `exclusive`, where the lock itself says nothing)."""
        return bool(self.queue)

    @property
    def exclusive(self) -> asyncio.Lock:
        """Held by every load and unload; the monitor takes it to stop a crash loop or a stuck start."""
        return self._lock

    async def refresh(self) -> None:
        """Follow changes made outside the router (router/monitor.py)."""
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
            self.last_used = time.monotonic()
        self.machine.move(target, cause)


def _retrieve(task: asyncio.Task) -> None:
    """Mark a task's outcome as seen (its waiters heard of a failure; the log has it too)."""
    if not task.cancelled():
        task.exception()
