"""The OpenAI-compatible surface: /v1/models, /v1/completions, /v1/chat/completions."""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web

from router.auth import audience
from router.engine_state import State
from router.errors import ApiError, UpstreamError
from router.metrics import RequestRecord
from router.models import infer_engine, route_request
from router.peer_routing import peer_for
from router.peers import HOP_HEADER, Peer, PeerDown
from router.proxy import Upstream, WaitNotes, forward
from router.requests import check_counts, json_object, optional
from router.state import CONFIG, ENGINES, HTTP, KEYS, METRICS, PEERS

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
        requested, engine = optional(body, "model", str), optional(body, "engine", str)
        if HOP_HEADER not in request.headers and (
                target := await peer_for(request.app[PEERS], request.app[ENGINES], config, requested, engine)):
            return await to_peer(request, endpoint, body, *target, record)
        group = infer_engine(request.app[ENGINES], config, engine, requested)
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
        record.client_left()
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
        observe = request.app[METRICS].observe_peer_request if record.peer else request.app[METRICS].observe_request
        observe(record, ENDPOINT_LABELS[endpoint], time.monotonic() - started)


async def to_peer(request: web.Request, endpoint: str, body: dict, peer: Peer, model: str,
                  record: RequestRecord) -> web.StreamResponse:
    """Relay the request to a peer router as to an engine: its answer, errors included, goes back as it came; the
    `engine` field goes with it; the peer's key replaces the client's."""
    record.peer, record.model = peer.name, model
    if peer.health.refuses:
        record.failure = "peer_down"
        raise PeerDown(peer.health.why_down(peer.name), code="peer_down", retry_after=peer.health.seconds_to_probe())
    body["model"] = model
    target = Upstream(f"peer {peer.name}", peer.headers(), peer.settings.connect_timeout_seconds,
                      peer.settings.first_byte_timeout_seconds, peer.answers)
    peer.in_flight[model] += 1
    try:
        return await forward(request, request.app[HTTP], peer.settings.url + endpoint, body,
                             request.app[CONFIG].current.router.upstream_read_timeout_seconds, record, target=target)
    except UpstreamError as exc:
        if exc.code == "peer_unreachable":
            peer.unreachable(exc.message)
        raise
    finally:
        peer.in_flight[model] -= 1
        if not peer.in_flight[model]:
            del peer.in_flight[model]
        if record.failure and record.failure != "peer_unreachable":
            peer.suspect()  # dropped or silent: is it still there?


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
    """This router's models (`peer` null), then each peer's as `peer/model` (`peer`: where it is served). With keys
    set, `path` (where the model lies on the box) is shown to admins only; others get null."""
    engines, config = request.app[ENGINES], request.app[CONFIG].current
    for_admin = request.app[KEYS].is_admin(request)
    loaded = {m.details.spec.served_name: m for group in engines.values() for m in group.instances if m.details.spec}
    served = {n for name, entry in config.models.items() for n in (name, *entry.aliases)} | set(loaded)
    data = []
    for name, entry in config.models.items():
        manager = loaded.get(name)
        data.append({"id": name, "object": "model", "owned_by": "unified-llm", "engine": entry.engine,
                     "state": manager.machine.status if manager else "available", "aliases": entry.aliases,
                     "path": entry.path if for_admin else None, **resident(manager), "peer": None})
    for name, manager in loaded.items():
        if name not in config.models:
            data.append({"id": name, "object": "model", "owned_by": "unified-llm", "engine": manager.engine,
                         "state": manager.machine.status, "aliases": [],
                         "path": manager.details.spec.path if for_admin else None, **resident(manager),
                         "peer": None})
    peers = request.app[PEERS]
    for peer in peers.peers.values():
        for model in peer.models.values():
            # its own name answers too when nothing here and no other peer has it
            own_name = model.name not in served and len(peers.listing(model.name)) == 1
            data.append({"id": f"{peer.name}/{model.name}", "object": "model", "owned_by": peer.name,
                         "engine": model.engine, "state": "peer_down" if peer.health.refuses else model.state,
                         "aliases": [model.name] if own_name else [], "path": None, "resident": model.resident,
                         "instance": None, "peer": peer.name})
    return web.json_response({"object": "list", "data": data})


def resident(manager) -> dict:
    """Whether the model is resident (loaded or loading) and on which instance of its engine."""
    return {"resident": manager is not None and manager.state in (State.LOADED, State.LOADING),
            "instance": manager.name if manager is not None else None}
