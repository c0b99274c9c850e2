"""Operator endpoints: health, status, load and unload."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from engines.memory import memory_pool
from engines.registry import ADAPTERS
from router import distributed
from router.auth import audience
from router.errors import InvalidRequest, without_log_lines
from router.engine_group import EngineGroup, is_loaded
from router.lifecycle import EngineManager
from router.models import infer_engine, resolve_spec
from router.peers import act_on_peer
from router.reload import reload
from router.requests import json_object, optional
from router.engine_state import State
from router.metrics import ProcessSample
from router.state import CONFIG, ENGINES, KEYS, LOG_FOLLOWERS, METRICS, PEERS, WARNINGS

LOAD_KEYS = {"model_path", "model", "engine", "force", "keep_others", "pin", "peer"}
OPTION_KEYS = {name for adapter in ADAPTERS.values() for name in adapter.Options.model_fields}

routes = web.RouteTableDef()


def engine_report(manager: EngineManager, memory: ProcessSample | None, log_followers: int, warnings: list[str],
                  for_admin: bool) -> dict:
    """One engine's entry in /v1/status: the original API's fields first, then what the lifecycle adds.
    Not `for_admin` (keys are set, and the reader has no admin key): `last_error` keeps its reason and leaves out
    the engine log lines it quotes, and `model_path` (an absolute path on the box) is null: `model` names it."""
    d, proc = manager.details, manager.details.process
    alive = bool(proc and proc.pid)
    last_error = d.last_error if for_admin or not d.last_error else without_log_lines(d.last_error, manager.name)
    return {
        "status": manager.machine.status,  # the original four values: idle, loading, loaded, error
        "model": d.spec.served_name if d.spec else None,
        "process_alive": alive,
        "state": manager.state.value,  # the exact lifecycle state (adds stopping)
        "state_since": manager.machine.since,
        "state_cause": manager.machine.cause,
        "model_path": d.spec.path if d.spec and for_admin else None,
        "options": d.spec.options if d.spec else None,
        "process_state": proc.state if proc else None,
        "pid": proc.pid if alive else None,
        "port": manager.port,
        "uptime_seconds": max(0, int(time.time()) - proc.start) if alive else None,
        "memory_rss_bytes": int(memory.rss_bytes) if alive and memory and memory.rss_bytes else None,
        # its anonymous part: what the memory check counts as freed when this model is swapped away
        "memory_anon_bytes": int(memory.anon_bytes) if alive and memory and memory.anon_bytes else None,
        # what the load expected to take (engines/memory.py), beside what it holds (memory_rss_bytes)
        "memory_estimate": d.memory_estimate.as_dict() if d.memory_estimate else None,
        "memory_pool": memory_pool(),  # unified (GB10), discrete-gpu or cpu: what the estimate is checked against
        "load_seconds": d.load_seconds,
        "load_phases": d.load_phases,  # seconds per phase of the last load (the running one: those it has done)
        "loading_since": d.loading_since,
        "load_phase": d.load_phase if manager.state is State.LOADING else None,
        "last_error": last_error,
        "unload_reason": d.unload_reason,
        "unloaded_at": d.unloaded_at,
        "in_flight": manager.in_flight,
        "waiting": manager.waiting,
        "idle_unload_seconds": manager.settings.idle_unload_seconds,
        "on_demand": manager.settings.on_demand,
        "log_followers": log_followers,  # open `logs?follow=1` streams
        "restarts": manager.restarts,  # crashes and restarts outside a load since the router started
        # failed on-demand loads, not tried on demand again until their file or entry changes or an admin loads them
        "failed_on_demand": {name: {**failed.as_dict(), "error": failed.error if for_admin else
                                    without_log_lines(failed.error, manager.name)}
                             for name, failed in manager.queue.failed.items()},
        "warnings": warnings,  # about the router's exposure (router/exposure.py): the same for every engine
    }


def group_report(group: EngineGroup, samples: dict, followers, warnings: list[str], for_admin: bool) -> dict:
    """An engine's entry: its most recently used instance exactly as before instances, then every instance."""
    primary = group.primary
    report = engine_report(primary, samples.get(primary.name), followers[primary.name], warnings, for_admin)
    instances = []
    for instance in group.shown():
        sample = samples.get(instance.name)
        alive = instance.details.process and instance.details.process.pid
        instances.append({**group.report(instance),
                          "memory_rss_bytes": int(sample.rss_bytes) if alive and sample and sample.rss_bytes else None,
                          "memory_anon_bytes": int(sample.anon_bytes) if alive and sample and sample.anon_bytes
                          else None})
    return {**report, "instance": primary.name, "max_instances": group.settings.max_instances,
            "instances": instances}


def engine_named(request: web.Request, value: object) -> EngineGroup:
    engines = request.app[ENGINES]
    if not isinstance(value, str) or value not in engines:
        choices = ", ".join(engines) or "none configured"
        raise InvalidRequest(f"'engine' must be one of: {choices}", param="engine", code="unknown_engine")
    return engines[value]


@routes.get("/health")
@audience("open")
async def health(request: web.Request) -> web.Response:
    engines = request.app[ENGINES]
    return web.json_response({"status": "ok",
                              "engines": {name: g.primary.machine.status for name, g in engines.items()},
                              "ready": [name for name, g in engines.items() if is_loaded(g)],
                              "warnings": request.app[WARNINGS], "time": time.time()})


@routes.get("/v1/status")
@audience("open")
async def status(request: web.Request) -> web.Response:
    """The engines are the only top-level keys, as the original API documented."""
    engines, followers = request.app[ENGINES], request.app[LOG_FOLLOWERS]
    samples = request.app[METRICS].processes.samples
    for group in engines.values():
        for instance in group.shown():  # what the answer reports (the monitor follows the others)
            await instance.refresh()
    for_admin = request.app[KEYS].is_admin(request)
    reports = {name: group_report(g, samples, followers, request.app[WARNINGS], for_admin)
               for name, g in engines.items()}
    await distributed.add_to_status(engines, reports, for_admin)  # rpc workers answering, vLLM ranks
    return web.json_response(reports)


@routes.post("/v1/models/load")
@audience("admin")
async def load(request: web.Request) -> web.Response:
    body = await json_object(request)
    if (peer := optional(body, "peer", str)) is not None:
        return await on_peer(request, peer, "/v1/models/load", body)
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
    force = optional(body, "force", bool) or False
    keep_others = optional(body, "keep_others", bool) or False
    pin = optional(body, "pin", bool)
    spec = resolve_spec(request.app[CONFIG].current, name, engine, options)
    group = engine_named(request, spec.engine)
    foreign = set(options) - set(ADAPTERS[spec.engine].Options.model_fields)
    if foreign:
        raise InvalidRequest(f"option(s) {', '.join(sorted(foreign))} do not apply to {spec.engine}",
                             param=sorted(foreign)[0], code="invalid_option")
    manager, seconds = await group.load(spec, force=force, keep_others=keep_others)
    if pin is not None:
        group.pin(spec.served_name, pin)
    process, estimate = manager.details.process, manager.details.memory_estimate
    return web.json_response({"status": "success", "engine": spec.engine, "model": spec.served_name,
                              "model_path": spec.path, "options": spec.options, "load_seconds": round(seconds, 3),
                              "pid": process.pid if process else None,
                              "memory_estimate": estimate.as_dict() if estimate else None,
                              "instance": manager.name, "pinned": group.is_pinned(manager)})


@routes.post("/v1/models/unload")
@audience("admin")
async def unload(request: web.Request) -> web.Response:
    body = await json_object(request)
    if (peer := optional(body, "peer", str)) is not None:
        return await on_peer(request, peer, "/v1/models/unload", body)
    group = engine_named(request, body.get("engine"))
    unloaded = await group.unload(optional(body, "model", str))
    return web.json_response({"status": "success", "engine": group.name, "instances": unloaded})


async def on_peer(request: web.Request, name: str, path: str, body: dict) -> web.Response:
    """A load or unload with `"peer": NAME`, done by that peer router with its admin key; its answer as it came."""
    settings = request.app[CONFIG].current.router
    status, answer = await act_on_peer(request.app[PEERS].named(name), path,
                                       {k: v for k, v in body.items() if k != "peer"},
                                       max(settings.load_timeout_seconds, settings.upstream_read_timeout_seconds))
    return web.json_response(answer, status=status)


@routes.post("/v1/models/pin")
@audience("admin")
async def pin(request: web.Request) -> web.Response:
    """Pin a resident model (never evicted for another model) or unpin it."""
    body = await json_object(request)
    model, pinned = optional(body, "model", str), optional(body, "pinned", bool)
    if not model:
        raise InvalidRequest("'model' is required: the served name of a resident model", param="model",
                             code="missing_field")
    config = request.app[CONFIG].current
    engine = optional(body, "engine", str)
    group = infer_engine(request.app[ENGINES], config, engine, model)
    instance = group.pin(model, True if pinned is None else pinned)
    return web.json_response({"status": "success", "engine": group.name, "model": model,
                              "instance": instance.name, "pinned": group.is_pinned(instance)})


@routes.post("/v1/config/reload")
@audience("admin")
async def reload_config(request: web.Request) -> web.Response:
    """Re-read models.yaml (SIGHUP does the same); restart only engines whose model's arguments changed."""
    # shielded: a client that hangs up must not leave a reload half applied
    return web.json_response(await asyncio.shield(reload(request.app[CONFIG], request.app[ENGINES],
                                                         request.app[PEERS])))
