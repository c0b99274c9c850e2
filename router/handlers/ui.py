"""The chat web UI: `GET /` is the page, `GET /static/{path}` its assets (CSS, JS, vendored libraries).
Everything comes from router/static, so the page works with no network beyond the router. Only files that
exist there when the router starts are served: a request can never reach outside that folder."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from router.auth import audience
from router.errors import NotFound

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
ASSETS = {p.relative_to(STATIC_DIR).as_posix(): p for p in STATIC_DIR.rglob("*")
          if p.is_file() and p.name != "index.html"}
# The page runs only its own scripts: even if model text ever got into the DOM as HTML, nothing inline runs.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

routes = web.RouteTableDef()


@routes.get("/")
@audience("open")
async def page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)


@routes.get("/static/{path:.+}")
@audience("open")
async def asset(request: web.Request) -> web.FileResponse:
    path = ASSETS.get(request.match_info["path"])
    if path is None:
        raise NotFound(f"no asset {request.match_info['path']!r}", code="unknown_asset")
    # no-cache: the browser revalidates (ETag / Last-Modified → 304), so an upgraded router serves new files
    return web.FileResponse(path, headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})
