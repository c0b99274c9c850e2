"""Prometheus endpoints: the router's own metrics, and each engine's re-exported through port 8080."""

from __future__ import annotations

import re

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from router.auth import audience
from router.distributed import rpc_worker_answers
from router.engine_group import find_instance, instance_names
from router.engine_state import State
from router.errors import NotFound, UpstreamError
from router.state import ENGINES, HTTP, METRICS

routes = web.RouteTableDef()
SAMPLE = re.compile(rb"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?(\s.*)$")


def _escape(value: str) -> bytes:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").encode()


def add_labels(text: bytes, labels: dict[str, str]) -> bytes:
    """Add our labels to every sample line; a label the engine already uses under one of our names keeps its
    value as `exported_<name>` (Prometheus' own convention), e.g. vLLM's engine index. Comments pass through."""
    ours = b",".join(k.encode() + b'="' + _escape(v) + b'"' for k, v in labels.items())
    clash = re.compile(rb'(^|,)(' + b"|".join(re.escape(k.encode()) for k in labels) + rb')="')
    out = []
    for line in text.splitlines():
        match = SAMPLE.match(line) if line and not line.startswith(b"#") else None
        if match:
            name, _, existing, rest = match.groups()
            existing = clash.sub(rb'\1exported_\2="', existing) if existing else b""
            line = name + b"{" + (existing + b"," if existing else b"") + ours + b"}" + rest
        out.append(line)
    return b"\n".join(out) + b"\n"


@routes.get("/metrics")
@audience("open")
async def router_metrics(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    metrics.rpc_workers_seen(await rpc_worker_answers(request.app[ENGINES]))  # probed as Prometheus scrapes
    return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


@routes.get("/metrics/engines/{engine}")
@audience("open")
async def engine_metrics(request: web.Request) -> web.Response:
    engines = request.app[ENGINES]
    # an engine's name is its instance 0 (not the most recently used one /v1/status shows): Prometheus scrapes
    # the engine and each instance, so every process is read once, always under the same `engine` label
    manager = find_instance(engines, request.match_info["engine"])
    if manager is None:
        raise NotFound(f"no engine {request.match_info['engine']!r}; engines: {', '.join(engines)} (instances: "
                       f"{', '.join(instance_names(engines))})", code="unknown_engine")
    headers = {"Content-Type": CONTENT_TYPE_LATEST}
    spec = manager.details.spec
    if manager.state is not State.LOADED or spec is None:  # nothing to scrape: an empty, valid exposition
        return web.Response(body=f"# engine {manager.name} is {manager.state.value}\n".encode(), headers=headers)
    try:
        async with request.app[HTTP].get(manager.base_url + manager.adapter.METRICS_PATH,
                                         timeout=aiohttp.ClientTimeout(total=10)) as resp:
            text = await resp.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise UpstreamError(f"could not read {manager.name}'s metrics: {exc!r}", code="engine_unreachable")
    return web.Response(body=add_labels(text, {"engine": manager.name, "model": spec.served_name}), headers=headers)
