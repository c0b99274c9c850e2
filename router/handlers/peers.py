"""GET /v1/peers: each peer router's health, latency and models, and a unified-llm peer's own status."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from router.auth import audience
from router.state import KEYS, PEERS

routes = web.RouteTableDef()


@routes.get("/v1/peers")
@audience("open")
async def list_peers(request: web.Request) -> web.Response:
    """Open like /v1/status; a peer's URL is shown to admins only (with keys set)."""
    for_admin = request.app[KEYS].is_admin(request)
    peers = request.app[PEERS].peers
    statuses = await asyncio.gather(*(peer.figures() for peer in peers.values()))
    now = time.monotonic()
    return web.json_response({name: {**peer.report(for_admin), "status": status,
                                     "status_age_seconds": round(now - peer.status_at, 3)
                                     if status is not None and peer.status_at is not None else None}
                              for (name, peer), status in zip(peers.items(), statuses, strict=True)})
