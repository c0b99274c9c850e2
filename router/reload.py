"""Re-read models.yaml without a restart: report what changed, restart only engines whose loaded model's
effective arguments changed. An invalid file changes nothing."""

from __future__ import annotations

import asyncio
import logging

from router.config import Config, ConfigError, load_config
from router.errors import ApiError, InvalidRequest
from router.lifecycle import EngineManager
from router.models import re_resolve
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


def launch_settings(config: Config, engine: str) -> dict:
    """The engine settings that shape its command line or environment (a change needs a restart)."""
    return config.engines[engine].model_dump(include={"port", "extra_args", "env", "binary"})


def diff_models(old: Config, new: Config) -> dict[str, list[str]]:
    return {"added": sorted(set(new.models) - set(old.models)),
            "removed": sorted(set(old.models) - set(new.models)),
            "changed": sorted(n for n in set(old.models) & set(new.models) if old.models[n] != new.models[n])}


async def reload(live: LiveConfig, engines: dict[str, EngineManager]) -> dict:
    try:
        new = load_config(live.path)
    except ConfigError as exc:
        raise InvalidConfig(exc) from exc
    old = live.current
    if set(new.engines) != set(old.engines):
        raise InvalidRequest("adding or removing an engine needs a router restart "
                             "(supervisorctl restart router); nothing was changed", code="restart_required")
    plans: dict[str, object] = {}
    for name, manager in engines.items():
        spec = manager.state.spec
        settings_changed = launch_settings(new, name) != launch_settings(old, name)
        manager.configure(new.engines[name], new.router)
        if spec is None:
            continue
        try:
            new_spec = re_resolve(new, spec)
        except ApiError as exc:
            plans[name] = f"kept running: its model no longer resolves ({exc.message})"
            continue
        if new_spec is None:
            plans[name] = f"kept running: {spec.served_name} was removed from the catalog"
        elif new_spec != spec or settings_changed:
            plans[name] = new_spec
    live.current = new

    async def restart(name: str, spec) -> dict:
        try:
            seconds = await engines[name].load(spec)
            return {"restarted": True, "model": spec.served_name, "load_seconds": round(seconds, 3)}
        except ApiError as exc:
            return {"restarted": False, "error": exc.message}

    restarts = {n: s for n, s in plans.items() if not isinstance(s, str)}
    results = dict(zip(restarts, await asyncio.gather(*(restart(n, s) for n, s in restarts.items()))))
    report = {
        "status": "success",
        "models": diff_models(old, new),
        "engines": {name: results.get(name) or {"restarted": False, "note": plans.get(name, "unchanged")}
                    for name in engines},
        "router_restart_needed": [key for key in ("host", "port", "max_body_bytes")
                                  if getattr(old.router, key) != getattr(new.router, key)],
    }
    log.info("config reloaded: %s", report)
    return report
