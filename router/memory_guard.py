"""Memory-aware admission of loads, one ledger for every engine.

A load whose estimate (engines/memory.py) would leave less than router.memory_reserve_gib of available memory is
refused before anything is stopped, with the numbers and what to do. Available memory is the kernel's
MemAvailable, which already counts what running engines hold; the model an engine swaps away from is stopped
first, so its process tree's memory counts as freed.

Both engines draw on the same memory, so the check is not per engine: `MemoryLedger.reserve` checks and reserves
under one lock, and the reservation stands from the check until the engine is ready and its real memory has been
measured (`measured`), or the load ends without it (`release`). Meanwhile every other check counts the part of it
that the loading engine has not taken yet. A load that only fits once another engine's load in progress has shown
what it really takes waits for that (bounded), then is checked again; one that cannot fit is refused at once.
After an engine stops, a check that fails first waits (bounded: router.memory_settle_seconds) until MemAvailable
stops rising, then is made again: on unified memory the freed pages come back asynchronously (a check that
passes never waits: more memory could only help).

On a discrete GPU the estimate is reported but not checked: its memory is not the RAM that MemAvailable counts."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Awaitable, Callable

import psutil

from engines.memory import GiB, MemoryEstimate, human_bytes as gib
from router.errors import ApiError

log = logging.getLogger(__name__)

SETTLE_POLL_SECONDS = 0.25
SETTLED_RISE_BYTES = 64 << 20  # MemAvailable rising less than this over one poll has settled


class InsufficientMemory(ApiError):
    status = 409
    type = "insufficient_memory"


def available_bytes() -> int:
    return psutil.virtual_memory().available


def check_fits(engine: str, model: str, estimate: MemoryEstimate, reserve_gib: float | None, available: int,
               freed: int, others: dict[str, int], reserved: dict[str, int] | None = None) -> None:
    """Raise InsufficientMemory when loading would leave less than the reserve of `available` memory (plus what
    stopping the engine's current model frees, less what other engines' loads in progress have reserved and not
    taken yet: `reserved`)."""
    if reserve_gib is None or estimate.pool == "discrete-gpu":
        return
    reserved = {name: n for name, n in (reserved or {}).items() if n > 0}
    reserve = int(reserve_gib * GiB)
    left = available + freed - sum(reserved.values()) - estimate.total_bytes
    if left >= reserve:
        return
    held = ", ".join(f"{name} holds {gib(rss)}" for name, rss in others.items() if rss) or "no other engine runs"
    freed_note = f" (+{gib(freed)} that stopping {engine}'s current model frees)" if freed else ""
    loading = "".join(f"; {name}'s load in progress reserves {gib(n)} more" for name, n in reserved.items())
    raise InsufficientMemory(
        f"loading {model} on {engine} needs about {gib(estimate.total_bytes)} ({estimate.basis}); "
        f"{gib(available)} is available{freed_note} and router.memory_reserve_gib keeps {gib(reserve)} free "
        f"({estimate.pool} memory; {held}{loading}). Unload the other engine, lower ctx_size or "
        f"gpu_memory_utilization, or send \"force\": true to load anyway", code="insufficient_memory")


@dataclass
class Reservation:
    engine: str
    model: str
    bytes: int  # the estimate
    pid: int = 0  # the loading engine's new process, once started: what it has taken counts against `bytes`


Measure = Callable[[int], Awaitable[int]]  # what a process tree has taken from available memory


async def _tree_anon(pid: int) -> int:
    """What a loading engine's tree has taken from MemAvailable so far: its anonymous memory. Its rss also counts
    the shared libraries and model files it maps, page cache that MemAvailable still counts as available: taken
    off its reservation, they would let a second load pass while the first still grows."""
    from router.metrics import sample_tree
    return int((await asyncio.to_thread(sample_tree, pid)).anon_bytes)


class MemoryLedger:
    """The reservations of the loads in progress, shared by every engine's manager."""

    def __init__(self, available: Callable[[], int] = available_bytes, measure: Measure = _tree_anon,
                 settle_seconds: float = 10.0):
        self.available, self.measure, self.settle_seconds = available, measure, settle_seconds
        self.reservations: dict[str, Reservation] = {}
        self.held: dict[str, int] = {}  # what each loaded engine's tree measured once ready (informational)
        self._lock = asyncio.Lock()  # one check-and-reserve at a time, for every engine
        self._changed = asyncio.Event()  # a reservation was dropped
        self._stopped_since_check = False  # an engine stopped: MemAvailable may still be rising

    async def outstanding(self, but: str) -> dict[str, int]:
        """Per other engine loading: what its reservation has not taken yet."""
        out = {}
        for name, r in list(self.reservations.items()):  # a load may end (its reservation dropped) meanwhile
            if name != but:
                taken = await self.measure(r.pid) if r.pid else 0
                out[name] = max(0, r.bytes - taken)
        return out

    async def _settle(self) -> None:
        """After a stop, wait until MemAvailable stops rising (at most settle_seconds)."""
        self._stopped_since_check = False
        deadline, last = time.monotonic() + self.settle_seconds, self.available()
        while time.monotonic() < deadline:
            await asyncio.sleep(SETTLE_POLL_SECONDS)
            now = self.available()
            if now - last < SETTLED_RISE_BYTES:
                return
            last = now
        log.info("available memory was still rising %.0f s after an engine stopped; checking anyway",
                 self.settle_seconds)

    async def reserve(self, engine: str, model: str, estimate: MemoryEstimate | None, reserve_gib: float | None,
                      freed: int, others: dict[str, int], force: bool = False, wait_seconds: float = 0
                      ) -> Reservation | None:
        """Check that `model` fits beside everything else and reserve its estimate for `engine`, as one step.
        InsufficientMemory when it does not fit; when it would fit but for other loads in progress, wait up to
        `wait_seconds` for them to show what they really take, then check again. None: nothing to reserve."""
        if estimate is None:
            return None
        deadline = time.monotonic() + wait_seconds
        while True:
            async with self._lock:
                self._changed.clear()  # a reservation dropped from here on wakes the wait below
                reserved = await self.outstanding(but=engine)
                try:
                    if not force:
                        check_fits(engine, model, estimate, reserve_gib, self.available(), freed, others, reserved)
                    reservation = self.reservations[engine] = Reservation(engine, model, estimate.total_bytes)
                    self.held.pop(engine, None)
                    return reservation
                except InsufficientMemory:
                    if self._stopped_since_check:  # what a recent stop freed may still be coming back
                        await self._settle()
                        continue  # (more memory can only help: a check that passes never waits for this)
                    if not any(reserved.values()) or time.monotonic() >= deadline:
                        raise
                    # it would fit but for the other loads in progress: serialised behind them (else refused now)
                    check_fits(engine, model, estimate, reserve_gib, self.available(), freed, others)
                    log.info("%s: %s waits for %s to finish loading before its memory check", engine, model,
                             ", ".join(n for n, b in reserved.items() if b))
            try:
                await asyncio.wait_for(self._changed.wait(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                pass

    async def fits(self, engine: str, estimate: MemoryEstimate, reserve_gib: float | None) -> bool:
        """Would `estimate` fit now beside everything running and loading, with the reserve to spare? Reserves
        nothing: placement asks before choosing where a model goes (the load's `reserve` decides)."""
        reserved = await self.outstanding(but=engine)
        try:
            check_fits(engine, "", estimate, reserve_gib, self.available(), 0, {}, reserved)
        except InsufficientMemory:
            return False
        return True

    async def measured(self, engine: str, pid: int) -> int:
        """The engine is ready: what its process tree really holds replaces the estimate (MemAvailable counts it
        from now on)."""
        rss = await self.measure(pid) if pid else 0
        self.held[engine] = rss
        self._drop(engine)
        return rss

    def release(self, engine: str) -> None:
        """The load ended without a ready engine (failed, abandoned, interrupted)."""
        self._drop(engine)

    def stopped(self, engine: str) -> None:
        """The engine's process tree is gone: the next check waits for the memory to come back."""
        self.held.pop(engine, None)
        self._stopped_since_check = True

    def _drop(self, engine: str) -> None:
        if self.reservations.pop(engine, None):
            self._changed.set()
