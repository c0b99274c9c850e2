"""One engine's instances, and which of them a model goes to: several models resident at once, chosen by memory.

An engine runs up to `max_instances` processes, each an `EngineManager` (router/lifecycle.py) with one model, its
own supervisord program, port, launch plan, state and log. Instance 0 is the engine's original program; with
max_instances 1 (the default) the group is the one-process engine it always was. Where a model goes:

- a model served, loading or queued on an instance goes there: no swap;
- else a free instance (no model, nothing queued) takes it when its memory estimate fits beside everything else
  with router.memory_reserve_gib to spare (the shared ledger's check, nothing reserved);
- else the least recently used instance with no request in flight or waiting, past min_residency_seconds,
  swaps to it (its model is evicted);
- else the least recently used one with no request in flight or waiting, else the least recently used one: the
  swap waits its turn there under the one-process rules (residency, drain, arrival order, no starvation).
A model pinned through `POST /v1/models/pin`, or `keep_loaded` in the catalog, is never swapped away for another;
when every instance holds one, a request for another model is refused (409 `no_instance_free`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Callable

import aiohttp

from engines.device import has_cuda_gpu
from engines.spec import MAX_INSTANCES, ModelSpec, StateFileError, instance_name, read_pins, write_pins
from router.config import Config
from router.engine_process import Probe
from router.engine_state import State
from router.errors import ApiError
from router.lifecycle import EngineManager
from router.lifecycle_events import LifecycleEvents
from router.memory_guard import MemoryLedger
from router.supervisor import Supervisor

log = logging.getLogger(__name__)

GPU_POOL_SHARE = 1.0  # what vLLM instances' gpu_memory_utilization may add up to on one GPU


class NoInstanceFree(ApiError):
    status = 409
    type = "invalid_request_error"


class EngineGroup:
    def __init__(self, name: str, config: Config, supervisor: Supervisor, run_dir: Path,
                 http: aiohttp.ClientSession | None = None, probe: Probe | None = None,
                 events: LifecycleEvents | None = None, ledger: MemoryLedger | None = None,
                 watch: Callable[[EngineManager], None] = lambda instance: None):
        self.name, self.watch = name, watch  # `watch`: each instance once it is usable (its metrics)
        settings, router = config.engines[name], config.router
        self.ledger = ledger or MemoryLedger(settle_seconds=router.memory_settle_seconds)
        self.instances = [EngineManager(instance_name(name, k), settings, router, supervisor, run_dir, http, probe,
                                        events, self.ledger) for k in range(MAX_INSTANCES)]
        self.run_dir = run_dir
        self.pinned = self._read_pins()  # served names pinned through the admin API, until unpinned
        self.configure(config)

    def _read_pins(self) -> set[str]:
        try:
            return read_pins(self.run_dir, self.name)
        except StateFileError as exc:
            log.warning("%s: pins forgotten: %s", self.name, exc)
            return set()

    def configure(self, config: Config) -> None:
        self.settings, self.router_settings = config.engines[self.name], config.router
        self.kept = {name for name, entry in config.models.items() if entry.keep_loaded and entry.engine == self.name}
        for instance in self.instances:
            instance.configure(self.settings, self.router_settings)
        for instance in self.usable:
            self.watch(instance)

    @property
    def usable(self) -> list[EngineManager]:
        """The instances placement may use (max_instances of them)."""
        return self.instances[:self.settings.max_instances]

    @property
    def busy(self) -> list[EngineManager]:
        """Instances with a model, a load queued, or a process running."""
        return [i for i in self.instances if not i.vacant()]

    @property
    def primary(self) -> EngineManager:
        """The instance /v1/status shows at the engine's top level and a request naming no model goes to: the
        most recently used one with a model, else instance 0."""
        return max(self.busy, key=lambda i: i.admission.last_used, default=self.instances[0])

    def is_pinned(self, instance: EngineManager) -> bool:
        spec = instance.details.spec
        return spec is not None and (spec.served_name in self.pinned or spec.catalog_name in self.kept)

    def serving(self, served_name: str) -> EngineManager | None:
        """The instance that serves `served_name`, or is loading it or has it queued."""
        return next((i for i in self.instances if i.will_serve(served_name)), None)

    def known_specs(self) -> list[ModelSpec]:
        return [spec for i in self.instances for spec in i.known_specs()]

    # ---- placement --------------------------------------------------------------------------------------

    async def place(self, spec: ModelSpec) -> EngineManager:
        """The instance that is to load `spec` (not resident anywhere), by the rules above."""
        usable = self.usable
        free = [i for i in usable if i.vacant()]
        taken = [i for i in usable if not i.vacant()]
        if free and (not taken or await self.fits(free[0], spec)):
            return free[0]
        movable = [i for i in taken if not self.is_pinned(i)]
        if not movable:
            if free:  # the only choice: the load's own memory check answers, with the numbers
                return free[0]
            raise NoInstanceFree(
                f"no {self.name} instance can take {spec.served_name}: all {len(usable)} (max_instances) hold "
                f"pinned or keep_loaded models ({', '.join(held(i) for i in taken)}); unpin one "
                f"(POST /v1/models/pin with \"pinned\": false), unload one, or raise max_instances",
                code="no_instance_free")
        idle = [i for i in movable if not i.in_flight and not i.waiting]  # never one streaming, if any other
        unused = [i for i in idle if i.evictable()]
        chosen = min(unused or idle or movable, key=lambda i: i.admission.last_used)
        log.info("%s: %s replaces %s on %s (%s)", self.name, spec.served_name, held(chosen), chosen.name,
                 "least recently used, idle" if unused else "least recently used; its swap waits")
        return chosen

    async def fits(self, instance: EngineManager, spec: ModelSpec) -> bool:
        """Would `spec` on the free `instance` leave the reserve, beside everything running and loading?"""
        plan = instance.plan_for(spec)
        if self.gpu_shares_exceeded(plan.spec):
            return False
        try:
            estimate = await asyncio.to_thread(instance.adapter.estimate_memory, plan)
        except Exception:  # noqa: BLE001 (unreadable size: the load itself reports it)
            return True
        return await self.ledger.fits(instance.name, estimate, self.router_settings.memory_reserve_gib)

    def gpu_shares_exceeded(self, spec: ModelSpec, replacing: EngineManager | None = None) -> str | None:
        """vLLM on a GPU takes gpu_memory_utilization of the whole GPU per instance: why `spec` (in place of
        `replacing`'s model, if given) would push the resident instances' shares past it, else None."""
        share = spec.options.get("gpu_memory_utilization")
        if share is None or not has_cuda_gpu():
            return None
        others = {i.name: i.details.spec.options.get("gpu_memory_utilization", 0) for i in self.busy
                  if i.details.spec and i.details.spec.served_name != spec.served_name and i is not replacing}
        if share + sum(others.values()) <= GPU_POOL_SHARE + 1e-9:
            return None
        held = ", ".join(f"{name} {value:g}" for name, value in others.items())
        return (f"{spec.served_name} asks for gpu_memory_utilization {share:g} of the GPU, and the resident "
                f"{self.name} instances hold {held}: together past {GPU_POOL_SHARE:g}. Lower the shares in the "
                f"catalog entries' options so that they add up to at most {GPU_POOL_SHARE:g}")

    # ---- what the admin API does --------------------------------------------------------------------------

    async def load(self, spec: ModelSpec, force: bool = False, keep_others: bool = False) -> tuple[EngineManager, float]:
        """`POST /v1/models/load`. A resident model stays on its instance (reloaded only if its launch changed);
        otherwise the original request replaces the model of the instance /v1/status shows, and `keep_others`
        places it as a request would (a free instance, else the least recently used one)."""
        instance = self.serving(spec.served_name)
        if instance is None:
            instance = await self.place(spec) if keep_others else self.primary
            if keep_others and (why := self.gpu_shares_exceeded(spec, replacing=instance)):
                raise NoInstanceFree(why, code="gpu_shares_exceeded")
        return instance, await instance.load(spec, force=force)

    def pin(self, served_name: str, pinned: bool) -> EngineManager:
        instance = next((i for i in self.busy if i.details.spec and i.details.spec.served_name == served_name), None)
        if instance is None:
            raise NotResident(f"{served_name} is not resident on {self.name}; load it first", param="model",
                              code="model_not_loaded")
        (self.pinned.add if pinned else self.pinned.discard)(served_name)
        write_pins(self.run_dir, self.name, self.pinned)  # the router restarted keeps them
        return instance

    async def unload(self, served_name: str | None = None) -> list[str]:
        """Unload `served_name`'s instance, or every instance (the engine then has no model, as before
        instances: instance 0's unload is remembered, so the default does not come back at the next start)."""
        if served_name is not None:
            targets = [i for i in self.busy if i.details.spec and i.details.spec.served_name == served_name]
            if not targets:
                raise NotResident(f"{served_name} is not resident on {self.name}", param="model",
                                  code="model_not_loaded")
        else:
            targets = [self.instances[0], *(i for i in self.busy if i.index)]
        await asyncio.gather(*(i.unload() for i in targets))
        return [i.name for i in targets]

    def report(self, instance: EngineManager) -> dict:
        """One instance in /v1/status's `instances`."""
        d, now = instance.details, time.monotonic()
        return {"name": instance.name, "model": d.spec.served_name if d.spec else None,
                "state": instance.state.value, "port": instance.port,
                "pid": d.process.pid if d.process and d.process.pid else None,
                "last_used": round(time.time() - (now - instance.admission.last_used), 3),
                "in_flight": instance.in_flight, "waiting": instance.waiting, "pinned": self.is_pinned(instance)}

    def shown(self) -> list[EngineManager]:
        """The instances /v1/status lists: the usable ones, and any other still busy (max_instances lowered)."""
        return [i for i in self.instances if i in self.usable or not i.vacant()]


class NotResident(ApiError):
    status = 404
    type = "invalid_request_error"


def held(instance: EngineManager) -> str:
    """The model an instance holds or is about to, in words."""
    specs = instance.known_specs()
    return specs[-1].served_name if specs else "nothing"


def find_instance(engines: dict[str, EngineGroup], name: str) -> EngineManager | None:
    """The instance named `name`: an engine's own name is its instance 0 (its program, log and metrics)."""
    return next((i for group in engines.values() for i in group.instances if i.name == name), None)


def instance_names(engines: dict[str, EngineGroup]) -> list[str]:
    return [i.name for group in engines.values() for i in group.instances]


def is_loaded(group: EngineGroup) -> bool:
    return any(i.state is State.LOADED for i in group.instances)
