"""One engine's model lifecycle: load, unload, observe. Loads are serialized per engine.

The truth about a process comes from supervisord (is it running, which PID) and from the engine itself
(does it answer its readiness URLs). A background monitor refreshes both every `poll_seconds`, so status
follows changes made outside the router (`supervisorctl stop`, a crash) within a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator

import aiohttp
import psutil

from engines.registry import ADAPTERS
from engines.process_group import leftovers
from engines.spec import ModelSpec, Resume, clear_spec, read_resume, read_spec, write_resume, write_spec
from router.config import EngineSettings, RouterSettings
from router.errors import EngineUnavailable, LoadFailed
from router.metrics import RouterMetrics
from router.supervisor import STARTING_STATES, STOPPED_STATES, ProcessInfo, Supervisor, SupervisorError

log = logging.getLogger(__name__)

LOG_LINES_IN_ERRORS = 15


@dataclass
class EngineState:
    status: str = "idle"  # idle | loading | loaded | error
    spec: ModelSpec | None = None
    process: ProcessInfo | None = None
    last_error: str | None = None
    load_seconds: float | None = None
    loaded_at: float | None = None
    resume_spec: ModelSpec | None = None  # the model an idle unload took away; the next request brings it back
    unload_reason: str | None = None  # why the engine went idle, e.g. "idle for 300 s"
    unloaded_at: float | None = None


class EngineManager:
    def __init__(self, name: str, settings: EngineSettings, router: RouterSettings, supervisor: Supervisor,
                 run_dir: Path, http: aiohttp.ClientSession, metrics: RouterMetrics):
        self.name = name
        self.adapter = ADAPTERS[name]
        self.supervisor = supervisor
        self.run_dir = run_dir
        self.http = http
        self.metrics = metrics
        self.configure(settings, router)
        spec = read_spec(run_dir, name)
        self.state = EngineState(spec=spec)
        resume = None if spec else read_resume(run_dir, name)  # idle-unloaded before the router restarted
        if resume:
            self.state.resume_spec, self.state.unload_reason = resume.spec, resume.reason
            self.state.unloaded_at = resume.unloaded_at
        self._lock = asyncio.Lock()
        self._pending: tuple[ModelSpec, asyncio.Task] | None = None
        self._changed = asyncio.Event()  # set whenever the observed state changes
        self._ready_pid = 0  # the engine PID that last answered its readiness URLs
        self._known_pid = 0  # the last engine PID seen; a different one outside a load is a restart
        self.in_flight = 0  # requests being answered by the engine now
        self.waiting = 0  # requests waiting for the engine to finish loading
        self.last_used = time.monotonic()

    def configure(self, settings: EngineSettings, router: RouterSettings) -> None:
        """Take (re)loaded settings; a port change takes effect with the engine's next start."""
        self.settings, self.router_settings = settings, router

    @property
    def port(self) -> int:
        return self.settings.port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def load_timeout(self) -> float:
        return self.router_settings.load_timeout_seconds

    # ---- traffic -----------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[None]:
        """Count a request as in flight for its whole life (a stream included): swaps drain these first."""
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
            self.last_used = time.monotonic()

    def serves(self, served_name: str) -> bool:
        """True when `served_name` is loaded or loading here (so an on-demand request has nothing to do)."""
        current = self.state.spec
        return bool(current and current.served_name == served_name and self.state.status in ("loaded", "loading"))

    async def ensure(self, spec: ModelSpec) -> None:
        """On-demand: make `spec`'s model the served one, joining a load of it already under way."""
        if self.serves(spec.served_name):
            return
        if self._pending and self._pending[0].served_name == spec.served_name:
            spec = self._pending[0]
        await self.load(spec)

    async def unload_if_idle(self) -> None:
        idle_after = self.settings.idle_unload_seconds
        if (idle_after and self.state.status == "loaded" and not self.in_flight and not self._lock.locked()
                and time.monotonic() - self.last_used >= idle_after):
            log.info("%s: unloading %s after %.0f s without requests", self.name,
                     self.state.spec.served_name if self.state.spec else "?", idle_after)
            resume = self.state.spec
            await self.unload(reason=f"idle for {idle_after:g} s")
            self.state.resume_spec = resume
            write_resume(self.run_dir, Resume(resume, self.state.unload_reason, self.state.unloaded_at))

    # ---- observation -------------------------------------------------------------------------------------

    async def is_ready(self, timeout: float = 2.0) -> bool:
        try:
            for path in self.adapter.READY_PATHS:
                async with self.http.get(self.base_url + path,
                                         timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                    if resp.status != 200:
                        return False
            return True
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return False

    async def refresh(self) -> EngineState:
        """Re-derive status from supervisord and the engine, unless a load/unload owns the state now."""
        if self._lock.locked():
            return self.state
        state = self.state
        state.process = await self.supervisor.info(self.name)
        if state.process.pid and state.process.pid != self._known_pid:
            if self._known_pid:
                log.warning("%s: engine restarted outside a load (pid %s -> %s)", self.name, self._known_pid,
                            state.process.pid)
                self.metrics.restarts.labels(self.name).inc()
            self._known_pid = state.process.pid
        proc = state.process.state
        if state.spec is None:
            new = "error" if state.last_error else "idle"
        elif proc == "RUNNING":
            # Probe the engine only until it has answered once per process, not on every poll.
            if state.process.pid != self._ready_pid and await self.is_ready():
                self._ready_pid = state.process.pid
            new = "loaded" if state.process.pid == self._ready_pid else "loading"
        elif proc in STARTING_STATES or proc == "EXITED":
            new = "loading"  # supervisord is (re)starting it after a crash, with the same model
        elif proc == "STOPPED":
            new = "idle"  # stopped on purpose (supervisorctl stop); `start` resumes the same model
        else:  # FATAL: it kept dying and supervisord gave up
            new = "error"
            if state.status != "error":
                state.last_error = await self._failure_message(state.process)
        if self._lock.locked():  # a load or unload began while we were asking: it owns the state now
            return state
        if new == "loaded" and state.status != "loaded":
            state.loaded_at = state.loaded_at or time.time()
        self._set_status(new)
        return state

    def _set_status(self, status: str) -> None:
        if status != self.state.status:
            log.info("%s: %s -> %s", self.name, self.state.status, status)
            self.state.status = status
            self._changed.set()
            self._changed = asyncio.Event()

    async def wait_until_serving(self, timeout: float) -> ModelSpec:
        """Return the served spec, waiting (bounded, in a bounded queue) while the engine loads; else a 503."""
        if self.state.status == "loaded" and self.state.spec:
            return self.state.spec
        if self.waiting >= self.router_settings.max_queued_requests:
            raise EngineUnavailable(f"engine {self.name} is loading and {self.waiting} requests are already "
                                    f"waiting (router.max_queued_requests); retry later", code="queue_full")
        self.waiting += 1
        try:
            return await self._wait_serving(timeout)
        finally:
            self.waiting -= 1

    async def _wait_serving(self, timeout: float) -> ModelSpec:
        deadline = time.monotonic() + timeout
        while True:
            state = self.state
            if state.status == "loaded" and state.spec:
                return state.spec
            if state.status == "idle":
                why = f" (unloaded: {state.unload_reason})" if state.unload_reason else ""
                raise EngineUnavailable(f"engine {self.name} has no model loaded{why}; load one with "
                                        f"POST /v1/models/load {{\"engine\": \"{self.name}\", \"model_path\": ...}}",
                                        code="engine_idle")
            if state.status == "error":
                raise EngineUnavailable(f"engine {self.name} is in error: {state.last_error}",
                                        code="engine_error")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise EngineUnavailable(f"engine {self.name} is still loading after {timeout:.0f} s; retry later",
                                        code="engine_loading")
            try:
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.5))
            except asyncio.TimeoutError:
                pass

    # ---- load / unload -----------------------------------------------------------------------------------

    def schedule_load(self, spec: ModelSpec) -> asyncio.Task:
        """Start loading in the background; the status says `loading` from this moment on."""
        self._set_status("loading")

        async def run() -> None:
            try:
                await self.load(spec)
            except LoadFailed as exc:
                log.error("%s: background load of %s failed: %s", self.name, spec.served_name, exc.message)
        return asyncio.ensure_future(run())

    async def load(self, spec: ModelSpec) -> float:
        """Replace the engine's model with `spec`; a concurrent load of the same spec joins this one, and a
        load of the model already being served returns at once (0 s) without a restart."""
        state = self.state
        if state.status == "loaded" and state.spec == spec and state.process and state.process.pid == self._ready_pid:
            return 0.0
        if self._pending and self._pending[0] == spec:
            return await asyncio.shield(self._pending[1])
        task = asyncio.ensure_future(self._load_serialized(spec))
        self._pending = (spec, task)
        try:
            return await asyncio.shield(task)
        finally:
            if self._pending and self._pending[1] is task and task.done():
                self._pending = None

    async def _load_serialized(self, spec: ModelSpec) -> float:
        async with self._lock:
            self._set_status("loading")
            started = time.monotonic()
            try:
                await self._drain()
                await self._stop_process_tree()
                write_spec(self.run_dir, spec)
                self.state.spec = spec
                await self.supervisor.start(self.name)
                await self._wait_ready(started + self.load_timeout)
            except BaseException as exc:
                self.metrics.observe_load(self.name, spec.served_name, time.monotonic() - started, ok=False)
                message = str(exc) if isinstance(exc, LoadFailed) else f"load failed: {exc!r}"
                await self._give_up(message)
                if isinstance(exc, LoadFailed):
                    raise
                raise LoadFailed(message) from exc
            self.state.load_seconds = time.monotonic() - started
            self.state.loaded_at = time.time()
            self.state.last_error = self.state.unload_reason = self.state.unloaded_at = None
            self.state.resume_spec = None
            self.last_used = time.monotonic()
            self.state.process = await self.supervisor.info(self.name)
            self._known_pid = self.state.process.pid
            self.metrics.observe_load(self.name, spec.served_name, self.state.load_seconds, ok=True)
            self._set_status("loaded")
            log.info("%s: loaded %s in %.1f s", self.name, spec.served_name, self.state.load_seconds)
            return self.state.load_seconds

    async def unload(self, reason: str = "unloaded on request") -> None:
        async with self._lock:
            await self._stop_process_tree()
            clear_spec(self.run_dir, self.name, on_request=True)
            self.state.spec = None
            self.state.last_error = None
            self.state.unload_reason, self.state.unloaded_at = reason, time.time()
            self.state.load_seconds = None
            self.state.loaded_at = None
            self._set_status("idle")

    async def _drain(self) -> None:
        """Let in-flight requests on the old model finish, for at most router.drain_seconds; streams still
        running after that end with an error event when the engine stops."""
        deadline = time.monotonic() + self.router_settings.drain_seconds
        if self.in_flight:
            log.info("%s: waiting for %d in-flight request(s) before the swap", self.name, self.in_flight)
        while self.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        if self.in_flight:
            log.warning("%s: swapping with %d request(s) still in flight", self.name, self.in_flight)

    async def _wait_ready(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            info = await self.supervisor.info(self.name)
            if info.state in STOPPED_STATES or (info.state == "BACKOFF"):
                raise LoadFailed(await self._failure_message(info))
            if info.state == "RUNNING" and await self.is_ready():
                self._ready_pid = info.pid
                return
            await asyncio.sleep(0.25)
        raise LoadFailed(f"engine {self.name} did not become ready within {self.load_timeout:.0f} s; "
                         f"last log lines:\n{await self._log_tail()}")

    async def _give_up(self, message: str) -> None:
        """After a failed load: stop retries, forget the model so a restart does not repeat the failure."""
        log.error("%s: %s", self.name, message)
        try:
            await self._stop_process_tree()
        except SupervisorError as exc:
            log.error("%s: could not stop after failed load: %s", self.name, exc)
        clear_spec(self.run_dir, self.name)
        self.state.spec = None
        self.state.last_error = message
        self._set_status("error")

    async def _failure_message(self, info: ProcessInfo) -> str:
        why = info.spawn_error or f"exit status {info.exit_status}"
        return f"engine {self.name} stopped during start ({info.state}: {why}); last log lines:\n{await self._log_tail()}"

    async def _log_tail(self) -> str:
        try:
            text = await self.supervisor.tail_log(self.name, 16384)
        except SupervisorError as exc:
            return f"(log unavailable: {exc})"
        return "\n".join(text.splitlines()[-LOG_LINES_IN_ERRORS:])

    async def _stop_process_tree(self) -> None:
        """Stop the engine and wait until every process of its tree is gone (no two copies in memory)."""
        info = await self.supervisor.info(self.name)
        procs: list[psutil.Process] = []
        if info.pid:
            try:
                root = psutil.Process(info.pid)
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
        await self.supervisor.stop(self.name)
        procs += [p for p in await asyncio.to_thread(leftovers, self.run_dir, self.name) if p not in procs]
        if procs:
            _gone, alive = await asyncio.to_thread(psutil.wait_procs, procs, 10)
            for proc in alive:
                log.warning("%s: killing leftover pid %s", self.name, proc.pid)
                proc.kill()
            await asyncio.to_thread(psutil.wait_procs, alive, 5)
