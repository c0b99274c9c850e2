"""One engine's load queue: loads in arrival order, joining a queued load of the same model, which loads may be
dropped when their clients leave, what a waiting request can expect, and the failed on-demand loads remembered.

It decides nothing about processes: the engine's manager (router/lifecycle.py) runs the loads one at a time and
asks the queue. The rule for loads that clients leave:

- only a client that hangs up leaves; a request whose wait ran out may retry, so a load it waited for is kept
  (`keep_for`) and runs to its end;
- an on-demand load whose every waiting client hung up is dropped while queued, and cancelled while running only
  until it has asked the served model to stop (`abandoned_by`); after that it runs to its end (cancelling would
  leave the engine with no model; an idle unload can take it later);
- an explicit load (`POST /v1/models/load`) is never dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from engines.spec import ModelSpec

log = logging.getLogger(__name__)

FIRST_LOAD_GUESS_SECONDS = 30.0  # a load's expected time when neither the model nor the engine has loaded yet
OVERRUN_FLOOR_SECONDS = 5.0  # the least a running load is expected to take still


@dataclass
class PendingLoad:
    spec: ModelSpec
    task: asyncio.Task | None = None
    on_demand: bool = False  # only requests want it: when every one of them hung up, it may be dropped
    force: bool = False  # load even when the memory estimate says it does not fit
    abandoned: bool = False  # every request that wanted it hung up before the old model was stopped: cancelled
    kept: bool = False  # it runs to its end whoever leaves: a request stopped waiting for it (and may retry)
    started_at: float | None = None  # monotonic, once it owns the engine
    old_stopped: bool = False  # the served model's stop was asked for: from here on the load runs to its end


@dataclass(frozen=True)
class FailedLoad:
    """An on-demand load that failed: requests do not start it again until its file or entry changes or an
    admin loads it."""
    spec: ModelSpec
    fingerprint: tuple
    error: str
    at: float  # wall clock

    def as_dict(self) -> dict:
        return {"model_path": self.spec.path, "error": self.error, "at": self.at}


def fingerprint(spec: ModelSpec) -> tuple:
    """What changes when the model's files change: sizes and modification times (a folder's own files)."""
    path = Path(spec.path)
    try:
        if path.is_dir():
            return tuple(sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in path.iterdir()
                                if f.is_file()))
        stat = path.stat()
        return (path.name, stat.st_size, stat.st_mtime_ns)
    except OSError:
        return ()


class LoadQueue:
    def __init__(self, engine: str):
        self.engine = engine
        self.loads: list[PendingLoad] = []  # queued or running, in arrival order
        self.history: dict[str, float] = {}  # served name -> seconds its last load took
        self.failed: dict[str, FailedLoad] = {}  # served name -> its failed on-demand load

    def __iter__(self) -> Iterator[PendingLoad]:
        return iter(self.loads)

    def __len__(self) -> int:
        return len(self.loads)

    def __bool__(self) -> bool:
        return bool(self.loads)

    def names(self) -> list[str]:
        return [p.spec.served_name for p in self.loads]

    def has(self, served_name: str) -> bool:
        return any(p.spec.served_name == served_name for p in self.loads)

    def find(self, spec: ModelSpec) -> PendingLoad | None:
        return next((p for p in self.loads if p.spec == spec), None)

    def add(self, pending: PendingLoad) -> None:
        self.loads.append(pending)

    def remove(self, pending: PendingLoad) -> None:
        if pending in self.loads:
            self.loads.remove(pending)

    def others_than(self, spec: ModelSpec) -> list[PendingLoad]:
        return [p for p in self.loads if p.spec != spec]

    # ---- clients leaving --------------------------------------------------------------------------------------

    def keep_for(self, wanted: str | None) -> None:
        """A request stopped waiting (its wait ran out): it did not leave, it may retry. The loads it waited for
        run to their end whoever else leaves."""
        for pending in self.loads:
            if wanted is None or pending.spec.served_name == wanted:
                pending.kept = True

    def abandoned_by(self, wanted: set[str | None]) -> list[PendingLoad]:
        """The on-demand loads to cancel now that only the requests wanting `wanted` still wait; each is marked
        abandoned and leaves the queue at once (no new request may join it)."""
        if None in wanted:  # a request for whatever model comes next keeps every load
            return []
        dropped = []
        for pending in list(self.loads):
            if not pending.on_demand or pending.kept or pending.spec.served_name in wanted:
                continue
            running = pending.started_at is not None
            if running and pending.old_stopped:
                log.info("%s: every request for %s has gone, but the engine's previous model is already stopped: "
                         "the load runs to its end", self.engine, pending.spec.served_name)
                pending.kept = True
                continue
            log.info("%s: cancelling the %s load of %s: every request that wanted it has gone", self.engine,
                     "running" if running else "queued", pending.spec.served_name)
            pending.abandoned = True
            self.loads.remove(pending)
            dropped.append(pending)
        return dropped

    # ---- what a waiting request can expect ---------------------------------------------------------------------

    def expected_wait(self, wanted: str | None, fallback: float | None) -> float | None:
        """Seconds until the load that brings `wanted` (None: the next one) is likely done: the loads up to and
        including it, each taking what that model's last load took (else `fallback`, the engine's last load,
        else a guess), the running one less what it has done (at least 5 s; a quarter of its expected time once
        it runs over). None when nothing is queued."""
        if not self.loads:
            return None
        now, total, guess = time.monotonic(), 0.0, fallback or FIRST_LOAD_GUESS_SECONDS
        for pending in self.loads:
            expected = self.history.get(pending.spec.served_name, guess)
            if pending.started_at is not None:
                ran = now - pending.started_at
                # past its expected time (a busier box than last time): a quarter of it more, not "any moment"
                expected = expected - ran if ran < expected - OVERRUN_FLOOR_SECONDS else max(
                    OVERRUN_FLOOR_SECONDS, expected / 4)
            total += expected
            if wanted is None or pending.spec.served_name == wanted:
                break
        return max(1.0, total)

    # ---- failed on-demand loads ----------------------------------------------------------------------------------

    def remember_failure(self, spec: ModelSpec, message: str) -> None:
        self.failed[spec.served_name] = FailedLoad(spec, fingerprint(spec), message, time.time())

    def forget_failure(self, served_name: str) -> None:
        self.failed.pop(served_name, None)

    def known_failure(self, spec: ModelSpec) -> FailedLoad | None:
        """The remembered failed on-demand load of `spec`, unless its entry or file changed since."""
        failed = self.failed.get(spec.served_name)
        if failed is None:
            return None
        if failed.spec != spec or failed.fingerprint != fingerprint(spec):
            del self.failed[spec.served_name]  # changed: it may be tried again
            return None
        return failed
