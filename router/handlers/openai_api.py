"""The OpenAI-compatible surface: /v1/models, /v1/completions, /v1/chat/completions."""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web

from router.auth import audience
from router.engine_state import State
from router.errors import ApiError
from router.metrics import RequestRecord
from router.models import infer_engine, route_request
from router.proxy import WaitNotes, forward
from router.requests import check_counts, json_object, optional
from router.state import CONFIG, ENGINES, HTTP, KEYS, METRICS

SAMPLING_DEFAULTS = {"max_tokens": 128, "temperature": 0.7, "top_p": 0.95}
ENDPOINT_LABELS = {"/v1/completions": "completions", "/v1/chat/completions": "chat_completions"}

log = logging.getLogger(__name__)
routes = web.RouteTableDef()


async def relay(request: web.Request, endpoint: str) -> web.StreamResponse:
    record, started, notes = RequestRecord(), time.monotonic(), None
    try:
        body = await json_object(request)
        optional(body, "stream", bool)
        check_counts(body)
        config = request.app[CONFIG].current
        requested = optional(body, "model", str)
        group = infer_engine(request.app[ENGINES], config, optional(body, "engine", str), requested)
        record.engine = group.name
        manager, routing = await route_request(group, requested, config)
        notes = WaitNotes(request) if body.get("stream") is True else None
        async with manager.admitted(routing.wanted, routing.load, config.router.request_wait_seconds,
                                    notes.note if notes else None) as spec:
            record.model = body["model"] = spec.served_name
            body.pop("engine", None)
            for key, value in SAMPLING_DEFAULTS.items():
                if not (key == "max_tokens" and "max_completion_tokens" in body):
                    body.setdefault(key, value)
            return await forward(request, request.app[HTTP], manager.base_url + endpoint, body,
                                 config.router.upstream_read_timeout_seconds, record,
                                 manager.adapter.REUSABLE_AFTER_STREAM, notes.response if notes else None)
    except ApiError as exc:
        record.status = exc.status
        if notes and notes.response:  # the event stream has begun: the error goes in it
            return await notes.fail(exc)
        raise
    except asyncio.CancelledError:  # the client hung up: the engine request was closed with the handler
        record.status = 499  # nginx's "client closed request"
        raise
    except web.HTTPException as exc:  # aiohttp's own (413 past max_body_bytes): counted with its real status
        record.status = exc.status
        raise
    except Exception as exc:
        if notes and notes.response:  # a bug after the stream began: never a second response written into it
            log.exception("relaying %s failed after the event stream began", endpoint)
            error = ApiError(f"internal router error: {exc!r}", code="internal_error")
            record.status = error.status
            return await notes.fail(error)
        raise
    finally:
        record.status = record.status or 500
        request.app[METRICS].observe_request(record, ENDPOINT_LABELS[endpoint], time.monotonic() - started)


@routes.post("/v1/completions")
@audience("inference")
async def completions(request: web.Request) -> web.StreamResponse:
    return await relay(request, "/v1/completions")


@routes.post("/v1/chat/completions")
@audience("inference")
async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await relay(request, "/v1/chat/completions")


@routes.get("/v1/models")
@audience("inference")
async def list_models(request: web.Request) -> web.Response:
    """With keys set, `path` (where the model lies on the box) is shown to admins only; others get null."""
    engines, config = request.app[ENGINES], request.app[CONFIG].current
    for_admin = request.app[KEYS].is_admin(request)
    loaded = {m.details.spec.served_name: m for group in engines.values() for m in group.instances if m.details.spec}
    data = []
    for name, entry in config.models.items():
        manager = loaded.get(name)
        data.append({"id": name, "object": "model", "owned_by": "unified-llm", "engine": entry.engine,
                     "state": manager.machine.status if manager else "available", "aliases": entry.aliases,
                     "path": entry.path if for_admin else None, **resident(manager)})
    for name, manager in loaded.items():
        if name not in config.models:
            data.append({"id": name, "object": "model", "owned_by": "unified-llm", "engine": manager.engine,
                         "state": manager.machine.status, "aliases": [],
                         "path": manager.details.spec.path if for_admin else None, **resident(manager)})
    return web.json_response({"object": "list", "data": data})


def resident(manager) -> dict:
    """Whether the model is resident (loaded or loading) and on which instance of its engine."""
    return {"resident": manager is not None and manager.state in (State.LOADED, State.LOADING),
            "instance": manager.name if manager is not None else None}
