"""One engine's monitor: it follows what happens to the engine's process outside the router's own loads and
unloads (`supervisorctl stop/start/restart`, crashes, supervisord giving up), counts restarts, stops a crash loop
(more than router.crash_restarts restarts within router.crash_window_seconds) and an engine that stays loading
past router.load_timeout_seconds outside a load (adopted at router start, restarted by supervisord).

It observes and reports; the engine's manager (router/lifecycle.py) owns the state. What it uses of the manager
is the `Observed` protocol below.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Callable, Protocol

from router.engine_state import State, StateMachine
from router.errors import LOG_LINES_MARK
from router.supervisor import STARTING_STATES

if TYPE_CHECKING:
    from engines.spec import LaunchPlan
    from router.config import RouterSettings
    from router.engine_process import EngineProcess
    from router.engine_details import EngineDetails
    from router.lifecycle_events import LifecycleEvents

log = logging.getLogger(__name__)

RUNNING_STATES = {"RUNNING", *STARTING_STATES}


class Observed(Protocol):
    """The manager as the monitor sees it."""
    name: str
    details: "EngineDetails"
    machine: StateMachine
    proc: "EngineProcess"
    events: "LifecycleEvents"
    router_settings: "RouterSettings"
    ready_pid: int  # the engine PID that last answered its readiness URLs
    exclusive: asyncio.Lock  # held by every load and unload
    base_url: str
    state: State

    def owned(self) -> bool: ...  # a load or unload owns the state

    def owned_by_queue(self) -> bool: ...  # a load is queued or running

    def observe(self, target: State, cause: str) -> None: ...

    async def give_up(self, message: str, cause: str) -> None: ...  # stop it, forget its plan, show error

    def spawn(self, coro) -> asyncio.Task: ...


class EngineMonitor:
    def __init__(self, engine: Observed, clock: Callable[[], float] = time.monotonic):
        self.engine, self.clock = engine, clock
        self.known_pid = 0  # the last engine PID seen; a different one outside a load is a restart
        self.restarts = 0  # restarts outside a load (crashes, `supervisorctl restart`) since the router started
        self.recent: deque[float] = deque()  # their times, within the crash window

    def new_launch(self, pid: int) -> None:
        """A load started `pid`: earlier crashes do not count against the new launch."""
        self.known_pid = pid
        self.recent.clear()

    def forget_crashes(self) -> None:
        """New crash-loop limits start their count afresh."""
        self.recent.clear()

    async def refresh(self) -> None:
        """Follow changes made outside the router: `supervisorctl stop/start/restart`, crashes, supervisord
        giving up. Only while no load or unload owns the state."""
        e = self.engine
        if e.owned():
            return
        info = await e.proc.info()
        if e.owned():
            return
        e.details.process = info
        restarted = bool(info.pid and self.known_pid and info.pid != self.known_pid)
        if restarted:
            log.warning("%s: engine restarted outside a load (pid %s -> %s)", e.name, self.known_pid, info.pid)
            e.events.engine_restarted(e.name)
            self._count_restart()
        if info.pid or info.state == "STOPPED":  # a deliberate stop: the next start is not a restart
            self.known_pid = info.pid
        if e.details.plan is None:
            return  # no model wanted: nothing outside the router can make one run
        if info.state == "RUNNING" or (info.state == "STARTING" and info.pid and info.pid == e.ready_pid):
            if info.pid != e.ready_pid and await e.proc.is_ready(e.base_url):
                if e.owned():
                    return
                e.ready_pid = info.pid
            if info.pid == e.ready_pid:
                e.observe(State.LOADED, f"the engine answers (pid {info.pid})")
            else:
                e.observe(State.LOADING, "supervisord restarted the engine" if restarted
                          else f"the engine process started (pid {info.pid})")
        elif info.state in STARTING_STATES or info.state == "EXITED":
            e.observe(State.LOADING, f"supervisord is restarting the engine ({info.state}, "
                                     f"exit status {info.exit_status})")
        elif info.state == "STOPPED":
            e.observe(State.IDLE, "stopped outside the router (supervisorctl stop)")
        elif info.state == "STOPPING" and e.state is State.LOADED:
            # `supervisorctl restart` or `stop` under way: new requests wait to see which (a restart lets them
            # through once the engine answers again; a stop refuses them) instead of failing against a dying engine
            e.observe(State.LOADING, "supervisord is stopping the engine (supervisorctl restart or stop)")
        elif info.state == "FATAL" and e.state is not State.ERROR:  # it kept dying and supervisord gave up
            e.details.last_error = await e.proc.failure_message(info)
            if not e.owned():
                e.observe(State.ERROR, "supervisord gave up on the engine")
        # UNKNOWN is passing: the next poll sees where it leads
        self._check_stuck()

    def _count_restart(self) -> None:
        """One more restart; past router.crash_restarts within the window, stop the crash loop."""
        e, now = self.engine, self.clock()
        settings = e.router_settings
        self.restarts += 1
        self.recent.append(now)
        while self.recent[0] < now - settings.crash_window_seconds:
            self.recent.popleft()
        if len(self.recent) > settings.crash_restarts:
            e.spawn(self._stop_crash_loop(e.details.plan, len(self.recent)))

    async def _stop_crash_loop(self, plan: "LaunchPlan | None", restarts: int) -> None:
        e = self.engine
        async with e.exclusive:
            if e.owned_by_queue() or plan is None or e.details.plan is not plan:
                return  # a load has replaced the crashing launch meanwhile
            self.recent.clear()
            settings = e.router_settings
            message = (f"engine {e.name} crashed and was restarted {restarts} times within "
                       f"{settings.crash_window_seconds:g} s serving {plan.spec.served_name}; stopped it "
                       f"(router.crash_restarts is {settings.crash_restarts}); load a model to try again"
                       f"{LOG_LINES_MARK}{await e.proc.log_tail()}")
            await e.give_up(message, "a crash loop")

    def _check_stuck(self) -> None:
        """Outside a load (an adopted engine, a crash restart, `supervisorctl start`) nothing else bounds how long
        the engine may stay loading: past router.load_timeout_seconds it is stopped and shown in error."""
        e = self.engine
        timeout = e.router_settings.load_timeout_seconds
        if e.state is State.LOADING and not e.owned() and time.time() - e.machine.since > timeout:
            e.spawn(self._stop_stuck(e.details.plan, e.machine.since))

    async def _stop_stuck(self, plan: "LaunchPlan | None", since: float) -> None:
        e = self.engine
        async with e.exclusive:
            if e.owned_by_queue() or e.state is not State.LOADING or e.machine.since != since or (
                    e.details.plan is not plan):
                return  # it answered, or a load took over, meanwhile
            timeout, cause = e.router_settings.load_timeout_seconds, e.machine.cause
            served = f" serving {plan.spec.served_name}" if plan else ""
            waiting = await e.proc.still_waiting(lambda log: e.adapter.waiting_on(plan.spec, log)) if plan else ""
            message = (f"engine {e.name}{served} did not become ready within {timeout:g} s ({cause}){waiting}; "
                       f"stopped it (router.load_timeout_seconds); load a model to try again"
                       f"{LOG_LINES_MARK}{await e.proc.log_tail()}")
            await e.give_up(message, "it never became ready")
