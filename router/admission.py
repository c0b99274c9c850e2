"""Admission: requests wait (bounded) for the model they need and are counted in flight from the moment they
are let through, so the next swap or unload drains them instead of cutting them off.

One `Admission` per engine, beside its manager (router/lifecycle.py), which owns the state and the load queue:
admission sees the manager only through `AdmissionHost`, and the manager calls `review` after every change. When a load completes, every request that waited for that model is let
through at once, before the next queued swap starts. A request that stops waiting never cancels a load; a
client that hangs up may (the queue's rule).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, AsyncIterator, Awaitable, Callable, Protocol

from engines.spec import ModelSpec
from router.engine_state import State
from router.load_queue import FIRST_LOAD_GUESS_SECONDS, LoadQueue
from router.errors import ApiError, EngineUnavailable, InvalidRequest, LoadFailed, TooManyRequests, without_log_lines

if TYPE_CHECKING:
    from router.config import EngineSettings, RouterSettings
    from router.engine_details import EngineDetails
    from router.lifecycle_events import LifecycleEvents
    from router.load_queue import FailedLoad

log = logging.getLogger(__name__)

NOTE_SECONDS = 1.0  # how often a waiting request hears why it waits (see proxy.WaitNotes)
UNAVAILABLE_RETRY_SECONDS = 5.0  # Retry-After of an idle or failed engine (a load may come; the SDK retries twice)
DRAIN_POLL_SECONDS = 0.05
Notify = Callable[[str], Awaitable[None]]


@dataclass
class Waiter:
    wanted: str | None  # the served name the request needs; None takes whatever model is loaded
    future: asyncio.Future


class AdmissionHost(Protocol):
    """The engine's manager as admission sees it: what it serves, its load queue, its settings."""
    name: str
    state: State
    details: "EngineDetails"  # spec (served or loading), plan, load_seconds, loading_since, unload_reason, last_error
    queue: LoadQueue
    holding_until: float | None  # while a swap waits out the served model's residency
    settings: "EngineSettings"
    router_settings: "RouterSettings"
    events: "LifecycleEvents"

    def known_failure(self, spec: ModelSpec) -> "FailedLoad | None": ...

    def request_on_demand(self, spec: ModelSpec) -> None: ...  # queue (or join) an on-demand load

    def drop_abandoned_loads(self) -> None: ...  # the waiting clients changed: loads nobody wants may go


class Admission:
    """The requests of one engine: those waiting (`waiters`) and those let through (`in_flight`)."""

    def __init__(self, engine: AdmissionHost):
        self.engine = engine
        self.waiters: list[Waiter] = []
        self.in_flight = 0  # requests let through to the engine and not finished
        self.last_used = time.monotonic()  # the last request's end, or the last load: the idle-unload clock
        self.last_request_at = float("-inf")  # the last request's end (residency: do its requests keep coming?)

    def wanted(self) -> set[str | None]:
        """The models the waiting requests wait for (None: whichever comes)."""
        return {waiter.wanted for waiter in self.waiters}

    @property
    def waiting(self) -> int:
        return len(self.waiters)

    def will_serve(self, served_name: str) -> bool:
        """True when `served_name` is loaded with no swap queued, or is being or about to be loaded."""
        if self.engine.queue.has(served_name):
            return True
        spec = self.engine.details.spec
        if self.engine.holding_until and self._servable(served_name):  # it serves its own requests until the swap
            return True
        return (not self.engine.queue and spec is not None and spec.served_name == served_name
                and self.engine.state in (State.LOADED, State.LOADING))

    def known_specs(self) -> list[ModelSpec]:
        """Models this engine serves, is loading, has queued, or is swapping away from."""
        specs = [self.engine.details.spec, self.engine.details.plan.spec if self.engine.details.plan else None,
                 *(p.spec for p in self.engine.queue)]
        return [s for s in specs if s is not None]

    @contextlib.asynccontextmanager
    async def admitted(self, wanted: str | None, load: ModelSpec | None, timeout: float,
                       notify: Notify | None = None) -> AsyncIterator[ModelSpec]:
        """Hold a place on the engine for one request: load `load` first when given (after the swaps already
        queued), wait at most `timeout` s for `wanted` (any model when None), count it in flight until the end.
        `notify` hears every NOTE_SECONDS what the request is waiting for.

        A request that stops waiting (its `timeout` runs out) never cancels a load: it may come back and join it.
        Only a client that hangs up leaves; router/load_queue.py says what that cancels."""
        if load is not None:
            if failed := self.engine.known_failure(load):
                self.engine.events.on_demand_failed(self.engine.name, load.served_name, refused=True)
                raise LoadFailed(f"the last on-demand load of {load.served_name} on {self.engine.name} failed and is not "
                                 f"tried again on demand until its file or catalog entry changes or an admin loads "
                                 f"it: {without_log_lines(failed.error, self.engine.name)}", code="model_load_failed",
                                 status=409)
            self._refuse_if_queue_full(wanted)  # before queuing the load: nobody would wait for it
            self.engine.request_on_demand(load)
        spec = await self._admit(wanted, timeout, notify)
        try:
            yield spec
        finally:
            self.in_flight -= 1
            self.last_used = self.last_request_at = time.monotonic()

    async def drain(self, seconds: float) -> None:
        """Let the requests in flight finish, for at most `seconds`; streams still running after that end with an
        error event when the engine stops."""
        deadline = time.monotonic() + seconds
        if self.in_flight:
            log.info("%s: waiting for %d in-flight request(s) to finish", self.engine.name, self.in_flight)
        while self.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(DRAIN_POLL_SECONDS)
        if self.in_flight:
            log.warning("%s: stopping with %d request(s) still in flight", self.engine.name, self.in_flight)

    def _servable(self, wanted: str | None) -> bool:
        spec = self.engine.details.spec
        return self.engine.state is State.LOADED and spec is not None and (wanted is None or wanted == spec.served_name)

    async def _admit(self, wanted: str | None, timeout: float, notify: Notify | None = None) -> ModelSpec:
        if self._servable(wanted) and (not self.engine.queue or self.engine.holding_until):
            self.in_flight += 1
            return self.engine.details.spec
        if not self.engine.queue and self.engine.state not in (State.LOADING, State.LOADED):
            raise self._unavailable()
        if not self.engine.queue and self.engine.state is State.LOADED:
            raise self.not_loaded(wanted)
        self._refuse_if_queue_full(wanted)
        waiter = Waiter(wanted, asyncio.get_running_loop().create_future())
        self.waiters.append(waiter)
        self._count_waiters()
        started = time.monotonic()
        try:
            while (remaining := started + timeout - time.monotonic()) > 0:
                done, _ = await asyncio.wait({waiter.future}, timeout=min(remaining, NOTE_SECONDS) if notify
                                             else remaining)
                if done:
                    break
                if notify:
                    await notify(self.why_waiting(wanted, time.monotonic() - started))
        except (asyncio.CancelledError, ConnectionResetError):  # the client left
            self._drop(waiter, cancelled=True)
            raise
        answered = waiter.future.done()
        self._drop(waiter, timed_out=not answered)
        self.engine.events.waited(self.engine.name, time.monotonic() - started)
        if not answered:
            retry_after = self.expected_wait(wanted)
            raise EngineUnavailable(f"engine {self.engine.name} is still loading after {timeout:.0f} s; the load goes on: "
                                    f"retry in about {retry_after:.0f} s (Retry-After) and the request joins it",
                                    code="engine_loading", retry_after=retry_after)
        return waiter.future.result()

    def _refuse_if_queue_full(self, wanted: str | None) -> None:
        if self.waiting >= self.engine.router_settings.max_queued_requests:
            raise TooManyRequests(f"engine {self.engine.name} is loading and {self.waiting} requests are already "
                                  f"waiting (router.max_queued_requests); retry later", code="queue_full",
                                  retry_after=self.expected_wait(wanted))

    def expected_wait(self, wanted: str | None) -> float:
        """Seconds until `wanted` (None: any model) is likely served: the loads up to and including the one it
        waits for, each taking what that model's last load took (else the engine's last load, else a guess),
        less what the running one has done already."""
        expected = self.engine.queue.expected_wait(wanted, self.engine.details.load_seconds)
        if expected is not None:
            return expected
        spec, since = self.engine.details.spec, self.engine.details.loading_since  # a restart the router did not start
        guess = self.engine.details.load_seconds or FIRST_LOAD_GUESS_SECONDS
        took = self.engine.queue.history.get(spec.served_name, guess) if spec else guess
        return max(1.0, took - (time.time() - since) if since else took)

    def why_waiting(self, wanted: str | None, waited: float) -> str:
        """What a waiting request waits for, in words: the load it needs, and how many come first."""
        names = self.engine.queue.names()
        target = wanted if wanted in names else (names[-1] if names else self.engine.details.spec.served_name
                                                   if self.engine.details.spec else None)
        ahead = names.index(target) if target in names else 0
        queue = f", after {ahead} other load{'s' if ahead > 1 else ''}" if ahead else ""
        what = f"to load {target}" if target else f"({self.engine.state.value})"
        if self.engine.holding_until and self.engine.details.spec:
            left = max(self.engine.holding_until - time.monotonic(), 0)
            queue += (f" ({self.engine.details.spec.served_name} serves its requests for up to {left:.0f} s more: "
                      f"min_residency_seconds)")
        return f"waiting for {self.engine.name} {what}{queue}: {waited:.0f} s"

    def _count_waiters(self) -> None:
        self.engine.events.waiting_changed(self.engine.name, dict(Counter(waiter.wanted or "any" for waiter in self.waiters)))

    def _drop(self, waiter: Waiter, cancelled: bool = False, timed_out: bool = False) -> None:
        """A waiter leaves (let through, refused, timed out or cancelled); one let through whose request was
        cancelled before it could run gives its place back. One that timed out keeps its loads going (it may
        retry); one whose client hung up may leave a load nobody wants."""
        if waiter in self.waiters:
            self.waiters.remove(waiter)
            self._count_waiters()
        if not waiter.future.done():
            waiter.future.cancel()
            if timed_out:
                self.engine.queue.keep_for(waiter.wanted)
            else:
                self.engine.drop_abandoned_loads()
        elif waiter.future.exception() is None and cancelled:
            self.in_flight -= 1

    def review(self, failed: ModelSpec | None = None, error: ApiError | None = None) -> None:
        """Let through every waiter the engine now serves; refuse those whose model no longer comes."""
        pending = set(self.engine.queue.names())
        spec, state = self.engine.details.spec, self.engine.state
        for waiter in list(self.waiters):
            if waiter.future.done():
                continue
            if self._servable(waiter.wanted):
                self.in_flight += 1
                waiter.future.set_result(spec)
            elif failed is not None and waiter.wanted == failed.served_name and waiter.wanted not in pending:
                waiter.future.set_exception(error.without_log_lines(self.engine.name))
            elif pending or state is State.LOADING:
                if waiter.wanted and waiter.wanted not in pending and not (spec and spec.served_name == waiter.wanted):
                    waiter.future.set_exception(EngineUnavailable(
                        f"model {waiter.wanted} is no longer being loaded on {self.engine.name}", code="model_not_loaded"))
            elif state is State.LOADED:
                waiter.future.set_exception(self.not_loaded(waiter.wanted))
            else:
                waiter.future.set_exception(self._unavailable())

    def not_loaded(self, requested: str | None) -> InvalidRequest:
        served = self.engine.details.spec.served_name if self.engine.details.spec else "none"
        how = "" if self.engine.settings.on_demand else f" (on_demand is off for {self.engine.name})"
        return InvalidRequest(f"model {requested!r} is not the one loaded on {self.engine.name} ({served}){how}; load it "
                              f"first with POST /v1/models/load", param="model", code="model_not_loaded")

    def _unavailable(self) -> EngineUnavailable:
        d = self.engine.details
        if self.engine.state is State.ERROR:
            reason = without_log_lines(d.last_error or "", self.engine.name)
            return EngineUnavailable(f"engine {self.engine.name} is in error: {reason}", code="engine_error",
                                     retry_after=UNAVAILABLE_RETRY_SECONDS)
        why = f" (unloaded: {d.unload_reason})" if d.unload_reason else ""
        if self.engine.state is State.STOPPING:
            why = f" (being unloaded: {d.unload_reason})"
        elif d.spec is not None:
            why = (f" ({d.spec.served_name} was stopped outside the router; `supervisorctl start {self.engine.name}` "
                   f"resumes it)")
        return EngineUnavailable(f"engine {self.engine.name} has no model loaded{why}; load one with POST /v1/models/load "
                                 f"{{\"engine\": \"{self.engine.name}\", \"model_path\": ...}}", code="engine_idle",
                                 retry_after=UNAVAILABLE_RETRY_SECONDS)
