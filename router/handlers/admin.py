"""Operator endpoints: health, status, load and unload."""

from __future__ import annotations

import time

from aiohttp import web

from engines.registry import ADAPTERS
from router.errors import InvalidRequest
from router.lifecycle import EngineManager
from router.models import resolve_spec
from router.reload import reload
from router.requests import json_object, optional
from router.state import CONFIG, ENGINES

LOAD_KEYS = {"model_path", "model", "engine"}
OPTION_KEYS = {name for adapter in ADAPTERS.values() for name in adapter.Options.model_fields}

routes = web.RouteTableDef()


def engine_report(manager: EngineManager) -> dict:
    state, proc = manager.state, manager.state.process
    alive = bool(proc and proc.pid)
    return {
        "status": state.status,
        "model": state.spec.served_name if state.spec else None,
        "model_path": state.spec.path if state.spec else None,
        "options": state.spec.options if state.spec else None,
        "process_alive": alive,
        "process_state": proc.state if proc else None,
        "pid": proc.pid if alive else None,
        "port": manager.port,
        "uptime_seconds": (proc.now - proc.start) if alive else None,
        "load_seconds": state.load_seconds,
        "last_error": state.last_error,
        "unload_reason": state.unload_reason,
        "unloaded_at": state.unloaded_at,
        "in_flight": manager.in_flight,
        "waiting": manager.waiting,
        "idle_unload_seconds": manager.settings.idle_unload_seconds,
        "on_demand": manager.settings.on_demand,
    }


def engine_named(request: web.Request, value: object) -> EngineManager:
    engines = request.app[ENGINES]
    if not isinstance(value, str) or value not in engines:
        choices = ", ".join(engines) or "none configured"
        raise InvalidRequest(f"'engine' must be one of: {choices}", param="engine", code="unknown_engine")
    return engines[value]


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    engines = request.app[ENGINES]
    return web.json_response({"status": "ok",
                              "engines": {name: m.state.status for name, m in engines.items()},
                              "ready": [name for name, m in engines.items() if m.state.status == "loaded"]})


@routes.get("/v1/status")
async def status(request: web.Request) -> web.Response:
    engines = request.app[ENGINES]
    for manager in engines.values():
        await manager.refresh()
    return web.json_response({"engines": {name: engine_report(m) for name, m in engines.items()},
                              "time": time.time()})


@routes.post("/v1/models/load")
async def load(request: web.Request) -> web.Response:
    body = await json_object(request)
    unknown = set(body) - LOAD_KEYS - OPTION_KEYS
    if unknown:
        raise InvalidRequest(f"unknown field(s): {', '.join(sorted(unknown))}; options are "
                             f"{', '.join(sorted(OPTION_KEYS))}", param=sorted(unknown)[0], code="unknown_field")
    name = optional(body, "model_path", str) or optional(body, "model", str)
    if not name:
        raise InvalidRequest("'model_path' is required (a models.yaml name or a path under the model roots)",
                             param="model_path", code="missing_field")
    engine = optional(body, "engine", str)
    options = {k: v for k, v in body.items() if k in OPTION_KEYS}
    spec = resolve_spec(request.app[CONFIG].current, name, engine, options)
    manager = engine_named(request, spec.engine)
    foreign = set(options) - set(manager.adapter.Options.model_fields)
    if foreign:
        raise InvalidRequest(f"option(s) {', '.join(sorted(foreign))} do not apply to {spec.engine}",
                             param=sorted(foreign)[0], code="invalid_option")
    seconds = await manager.load(spec)
    return web.json_response({"status": "success", "engine": spec.engine, "model": spec.served_name,
                              "model_path": spec.path, "options": spec.options, "load_seconds": round(seconds, 3),
                              "pid": manager.state.process.pid if manager.state.process else None})


@routes.post("/v1/models/unload")
async def unload(request: web.Request) -> web.Response:
    body = await json_object(request)
    manager = engine_named(request, body.get("engine"))
    await manager.unload()
    return web.json_response({"status": "success", "engine": manager.name})


@routes.post("/v1/config/reload")
async def reload_config(request: web.Request) -> web.Response:
    """Re-read models.yaml (SIGHUP does the same); restart only engines whose model's arguments changed."""
    return web.json_response(await reload(request.app[CONFIG], request.app[ENGINES]))
