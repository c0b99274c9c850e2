"""Re-read models.yaml without a restart: report what changed, restart only engines whose loaded model's
effective arguments changed. An invalid file changes nothing."""

from __future__ import annotations

import asyncio
import logging

from engines.spec import ModelSpec
from router.config import Config, ConfigError, load_config
from router.engine_state import State
from router.errors import ApiError, InvalidRequest
from router.engine_group import EngineGroup
from router.models import re_resolve
from router.peers import Peers
from router.state import LiveConfig

log = logging.getLogger(__name__)


class InvalidConfig(InvalidRequest):
    def __init__(self, error: ConfigError):
        super().__init__(f"config not reloaded, the running config stays in force: {error}", code="invalid_config")
        self.problems = error.problems

    def body(self) -> dict:
        body = super().body()
        body["error"]["problems"] = self.problems
        return body


def diff_models(old: Config, new: Config) -> dict[str, list[str]]:
    return {"added": sorted(set(new.models) - set(old.models)),
            "removed": sorted(set(old.models) - set(new.models)),
            "changed": sorted(n for n in set(old.models) & set(new.models) if old.models[n] != new.models[n])}


async def reload(live: LiveConfig, engines: dict[str, EngineGroup], peers: Peers | None = None) -> dict:
    try:
        new = load_config(live.path)
    except ConfigError as exc:
        raise InvalidConfig(exc) from exc
    old = live.current
    if set(new.engines) != set(old.engines):
        raise InvalidRequest("adding or removing an engine needs a router restart "
                             "(supervisorctl restart router); nothing was changed", code="restart_required")
    notes: dict[str, str] = {}
    restarts: dict[str, ModelSpec] = {}
    for group in engines.values():
        group.configure(new)
    instances = {i.name: i for group in engines.values() for i in group.instances}
    for name, manager in instances.items():
        spec, running = manager.details.spec, manager.details.plan
        if spec is None or manager.state not in (State.LOADED, State.LOADING):
            continue  # nothing runs: the new settings apply at its next load
        try:
            new_spec = re_resolve(new, spec)
        except ApiError as exc:
            notes[name] = f"kept running: its model no longer resolves ({exc.message})"
        else:
            if new_spec is None:
                notes[name] = f"kept running: {spec.served_name} was removed from the catalog"
            elif not manager.plan_for(new_spec).same_launch(running):
                restarts[name] = new_spec  # its command line, environment or port changed
        if name in notes and running and running.port != manager.settings.instance_port(manager.index):
            notes[name] += (f"; it stays on port {running.port} until its next load "
                            f"(models.yaml now says {manager.settings.instance_port(manager.index)})")
    live.current = new
    peer_changes = peers.configure(new) if peers is not None else None

    async def restart(name: str, spec: ModelSpec) -> dict:
        try:
            seconds = await instances[name].load(spec, "models.yaml reloaded")
            return {"restarted": True, "model": spec.served_name, "load_seconds": round(seconds, 3)}
        except ApiError as exc:
            return {"restarted": False, "error": exc.message}

    results = dict(zip(restarts, await asyncio.gather(*(restart(n, s) for n, s in restarts.items())), strict=True))
    report = {
        "status": "success",
        "models": diff_models(old, new),
        "peers": peer_changes,
        "engines": {name: results.get(name) or {"restarted": False, "note": notes.get(name, "unchanged")}
                    for name, manager in instances.items() if name in engines or not manager.vacant()},
        "router_restart_needed": [key for key in ("host", "port", "max_body_bytes")
                                  if getattr(old.router, key) != getattr(new.router, key)],
    }
    log.info("config reloaded: %s", report)
    return report
