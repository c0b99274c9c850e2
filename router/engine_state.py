"""An engine's lifecycle state: one type, one table of allowed transitions, one owner.

Every change goes through `StateMachine.move`, which checks the table, logs the change once with its cause,
and tells its owner (which counts it and lets waiting requests through). A change the table does not allow is
a bug: it raises `IllegalTransition` (the tests fail on any). `/v1/status`, the metrics and the web UI all read
`machine.state`.
"""

from __future__ import annotations

import enum
import logging
import time
from typing import Callable

log = logging.getLogger(__name__)


class State(str, enum.Enum):
    IDLE = "idle"  # no model running (none wanted, or stopped on purpose)
    LOADING = "loading"  # a model is starting: a load, a swap, or supervisord restarting a crashed engine
    LOADED = "loaded"  # the engine answers its readiness URLs and takes requests
    STOPPING = "stopping"  # an unload: in-flight requests drain, then the process tree stops; no new requests
    ERROR = "error"  # a load failed, or supervisord gave up on the process


# target state -> the causes that lead there, per source state (the causes are documentation; `move` takes any)
TRANSITIONS: dict[State, dict[State, str]] = {
    State.IDLE: {
        State.LOADING: "a load (API, on-demand, start-up restore) or `supervisorctl start`",
        State.ERROR: "supervisord gave up on a process started outside the router",
    },
    State.LOADING: {
        State.LOADED: "the engine answers its readiness URLs",
        State.ERROR: "the process exited or timed out while starting, or kept crashing (a crash loop)",
        State.IDLE: "`supervisorctl stop` while supervisord was restarting it",
        State.STOPPING: "an unload while supervisord was restarting it",
    },
    State.LOADED: {
        State.LOADING: "a swap to another model or new arguments, or a crash restart",
        State.STOPPING: "an unload (API or idle timeout)",
        State.IDLE: "`supervisorctl stop`",
        State.ERROR: "the process died and supervisord gave up, or it kept crashing (a crash loop)",
    },
    State.STOPPING: {
        State.IDLE: "the process tree is gone",
        State.ERROR: "supervisord could not stop it",
    },
    State.ERROR: {
        State.LOADING: "a load, or `supervisorctl start`",
        State.STOPPING: "an unload",
        State.IDLE: "`supervisorctl stop`",
    },
}

# The four values the original API documented for `status`; `state` carries the exact one. A stopping engine
# takes no new requests and will have no model, which is what old clients know as idle.
LEGACY_STATUS = {State.IDLE: "idle", State.LOADING: "loading", State.LOADED: "loaded", State.STOPPING: "idle",
                 State.ERROR: "error"}


class IllegalTransition(RuntimeError):
    pass


class StateMachine:
    def __init__(self, engine: str, on_move: Callable[[State, State], None] | None = None):
        self.engine = engine
        self.state = State.IDLE
        self.since = time.time()  # when the current state began
        self.cause = "router started"
        self._on_move = on_move

    @property
    def status(self) -> str:
        return LEGACY_STATUS[self.state]

    def move(self, target: State, cause: str) -> bool:
        """Change to `target` for `cause`; False when already there (nothing logged)."""
        if target is self.state:
            return False
        if target not in TRANSITIONS[self.state]:
            log.error("%s: illegal transition %s -> %s (%s)", self.engine, self.state.value, target.value, cause)
            raise IllegalTransition(f"{self.engine}: {self.state.value} -> {target.value} is not allowed ({cause})")
        log.info("%s: %s -> %s (%s)", self.engine, self.state.value, target.value, cause)
        source, self.state, self.since, self.cause = self.state, target, time.time(), cause
        if self._on_move:
            self._on_move(source, target)
        return True
