"""The OpenAI-compatible surface: /v1/models, /v1/completions, /v1/chat/completions."""

from __future__ import annotations

import time
from pathlib import Path

from aiohttp import web

from engines.spec import ModelSpec
from router.errors import ApiError, InvalidRequest
from router.lifecycle import EngineManager
from router.metrics import RequestRecord
from router.models import catalog_lookup, resolve_spec
from router.proxy import forward
from router.requests import json_object, optional
from router.state import CONFIG, ENGINES, HTTP, METRICS

SAMPLING_DEFAULTS = {"max_tokens": 128, "temperature": 0.7, "top_p": 0.95}
ENDPOINT_LABELS = {"/v1/completions": "completions", "/v1/chat/completions": "chat_completions"}

routes = web.RouteTableDef()


def names_of(spec: ModelSpec, config) -> set[str]:
    """Every string a user may send for a loaded model: served name, path, catalog name and aliases."""
    names = {spec.served_name, spec.path, Path(spec.path).name}
    found = catalog_lookup(config, spec.served_name)
    if found:
        names |= {found[0], *found[1].aliases}
    return names


def choose_engine(request: web.Request, body: dict) -> EngineManager:
    engines, config = request.app[ENGINES], request.app[CONFIG].current
    engine = optional(body, "engine", str)
    if engine is not None:
        if engine not in engines:
            raise InvalidRequest(f"unknown engine {engine!r}; choose one of: {', '.join(engines)}",
                                 param="engine", code="unknown_engine")
        return engines[engine]
    model = optional(body, "model", str)
    candidates = set()
    if model:
        candidates = {n for n, m in engines.items() if m.state.spec and model in names_of(m.state.spec, config)}
        if not candidates and (found := catalog_lookup(config, model)) and found[1].engine in engines:
            candidates = {found[1].engine}
    if len(candidates) == 1:
        return engines[candidates.pop()]
    why = f"model {model!r} matches {len(candidates) or 'no'} engine(s)" if model else "no 'engine' or 'model' given"
    raise InvalidRequest(f"cannot tell which engine to use ({why}); send \"engine\": one of {', '.join(engines)}",
                         param="engine", code="engine_required")


def upstream_model(spec: ModelSpec, requested: str | None, config) -> str:
    """Map what the user sent to the engine's served name; refuse a different catalog model or path."""
    if requested is None or requested in names_of(spec, config):
        return spec.served_name
    if catalog_lookup(config, requested) or "/" in requested or requested.endswith(".gguf"):
        raise InvalidRequest(f"model {requested!r} is not the one loaded on {spec.engine} ({spec.served_name}); "
                             f"load it first with POST /v1/models/load", param="model", code="model_not_loaded")
    return spec.served_name  # a generic name such as "gpt-4o" from an unmodified client: use the loaded model


async def load_on_demand(manager: EngineManager, requested: str | None, config) -> None:
    """A request naming a catalog model of this engine that is not loaded loads it (when the engine allows);
    a request to an engine unloaded for idleness brings its last model back."""
    if not manager.settings.on_demand:
        return
    found = catalog_lookup(config, requested) if requested else None
    if found and found[1].engine == manager.name:
        if not manager.serves(found[0]):  # checked first: resolving touches the filesystem
            await manager.ensure(resolve_spec(config, found[0], manager.name, {}))
    elif manager.state.status == "idle" and manager.state.resume_spec:
        await manager.ensure(manager.state.resume_spec)


async def relay(request: web.Request, endpoint: str) -> web.StreamResponse:
    record, started = RequestRecord(), time.monotonic()
    try:
        body = await json_object(request)
        optional(body, "stream", bool)
        manager = choose_engine(request, body)
        record.engine = manager.name
        config = request.app[CONFIG].current
        requested = optional(body, "model", str)
        await load_on_demand(manager, requested, config)
        spec = await manager.wait_until_serving(config.router.request_wait_seconds)
        record.model = spec.served_name
        body["model"] = upstream_model(spec, requested, config)
        body.pop("engine", None)
        for key, value in SAMPLING_DEFAULTS.items():
            if not (key == "max_tokens" and "max_completion_tokens" in body):
                body.setdefault(key, value)
        async with manager.serving():
            return await forward(request, request.app[HTTP], manager.base_url + endpoint, body,
                                 config.router.upstream_read_timeout_seconds, record,
                                 manager.adapter.REUSABLE_AFTER_STREAM)
    except ApiError as exc:
        record.status = exc.status
        raise
    finally:
        record.status = record.status or 500
        request.app[METRICS].observe_request(record, ENDPOINT_LABELS[endpoint], time.monotonic() - started)


@routes.post("/v1/completions")
async def completions(request: web.Request) -> web.StreamResponse:
    return await relay(request, "/v1/completions")


@routes.post("/v1/chat/completions")
async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await relay(request, "/v1/chat/completions")


@routes.get("/v1/models")
async def list_models(request: web.Request) -> web.Response:
    engines, config = request.app[ENGINES], request.app[CONFIG].current
    loaded = {m.state.spec.served_name: m for m in engines.values() if m.state.spec}
    data = []
    for name, entry in config.models.items():
        manager = loaded.get(name)
        data.append({"id": name, "object": "model", "owned_by": "unified-llm", "engine": entry.engine,
                     "state": manager.state.status if manager else "available", "aliases": entry.aliases,
                     "path": entry.path})
    for name, manager in loaded.items():
        if name not in config.models:
            data.append({"id": name, "object": "model", "owned_by": "unified-llm", "engine": manager.name,
                         "state": manager.state.status, "aliases": [], "path": manager.state.spec.path})
    return web.json_response({"object": "list", "data": data})
