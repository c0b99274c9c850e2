"""Memory-aware admission: a load whose estimate (engines/memory.py) would leave less than
router.memory_reserve_gib of available memory is refused before anything is stopped, with the numbers and
what to do. Available memory is the kernel's MemAvailable, which already counts what the other engine holds;
the model an engine swaps away from is stopped first, so its process tree's memory counts as freed.
On a discrete GPU the estimate is reported but not checked: its memory is not the RAM that MemAvailable counts."""

from __future__ import annotations

import psutil

from engines.memory import GiB, MemoryEstimate, human_bytes as gib
from router.errors import ApiError


class InsufficientMemory(ApiError):
    status = 409
    type = "insufficient_memory"


def available_bytes() -> int:
    return psutil.virtual_memory().available


def check_fits(engine: str, model: str, estimate: MemoryEstimate, reserve_gib: float | None, available: int,
               freed: int, others: dict[str, int]) -> None:
    """Raise InsufficientMemory when loading would leave less than the reserve of `available` memory (plus what
    stopping the engine's current model frees)."""
    if reserve_gib is None or estimate.pool == "discrete-gpu":
        return
    reserve = int(reserve_gib * GiB)
    left = available + freed - estimate.total_bytes
    if left >= reserve:
        return
    held = ", ".join(f"{name} holds {gib(rss)}" for name, rss in others.items() if rss) or "no other engine runs"
    freed_note = f" (+{gib(freed)} that stopping {engine}'s current model frees)" if freed else ""
    raise InsufficientMemory(
        f"loading {model} on {engine} needs about {gib(estimate.total_bytes)} ({estimate.basis}); "
        f"{gib(available)} is available{freed_note} and router.memory_reserve_gib keeps {gib(reserve)} free "
        f"({estimate.pool} memory; {held}). Unload the other engine, lower ctx_size or gpu_memory_utilization, "
        f"or send \"force\": true to load anyway", code="insufficient_memory")
