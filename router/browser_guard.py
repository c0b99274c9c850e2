"""What a web browser may do to the router: the user's own pages (the chat UI, curl, SDKs) yes; any other site
the user happens to visit, no.

- **DNS rebinding** (a name the attacker controls that resolves to 127.0.0.1, so the browser treats the router
  as that site and lets its page read the answers): while the inference API is open (no `ULLM_API_KEY`), a
  request whose `Host` is not a loopback name or address, `router.host`, or in `router.allowed_hosts` gets 421.
  With an API key set a rebound page has no key: it reaches only the open routes, which name models, not paths.
- **Cross-site requests** (CSRF: a page that posts a form or a `no-cors` fetch at 127.0.0.1:8080, and cannot read
  the answer but need not): a request that may change state or run inference (every method but GET, HEAD and
  OPTIONS) carrying `Sec-Fetch-Site: cross-site`/`same-site`, or (not marked `same-origin`) an `Origin` that is
  neither the router's own nor in `router.allowed_origins`, gets 403. curl and SDKs send neither header. (The
  bodies such pages can send without a preflight are not JSON: `router.requests.require_json` refuses them with
  415 besides.)
- **CORS** for `router.allowed_origins`: preflights are answered and answers carry Access-Control-Allow-Origin,
  so a browser app on another origin can call the API (with a key, as any client).

Both lists are read from the config in force at each request, so `POST /v1/config/reload` applies them.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web

from router.auth import Keys
from router.errors import ROUTER_ERROR_HEADER, Forbidden, MisdirectedRequest, error_response
from router.exposure import bind_address, is_loopback
from router.state import CONFIG

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CROSS_SITE = frozenset({"cross-site", "same-site"})  # same-site: another port of localhost is one
CORS_METHODS = "GET, POST"
CORS_HEADERS = "Authorization, Content-Type, X-API-Key"
CORS_EXPOSED = f"{ROUTER_ERROR_HEADER}, Retry-After"
CORS_MAX_AGE = "600"


def host_name(host: str) -> str:
    """The name or address in a Host header, without its port: `[::1]:8080` → `::1`, `Router:80` → `router`."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def trusted_host(host: str, bind_host: str, allowed_hosts: list[str]) -> bool:
    """A loopback name or address (and *.localhost, which browsers resolve to loopback themselves, RFC 6761),
    the address the router binds, or an allowed name."""
    name = host_name(host).rstrip(".")
    return (is_loopback(name) or name.endswith(".localhost") or name == host_name(bind_host)
            or "*" in allowed_hosts or name in allowed_hosts)


def _endpoint(scheme: str, netloc: str) -> tuple[str, int | None]:
    parts = urlsplit(f"{scheme}://{netloc}")
    try:
        port = parts.port
    except ValueError:
        return netloc, None
    return (parts.hostname or "").rstrip("."), port or {"http": 80, "https": 443}.get(scheme)


def same_origin(origin: str, host: str | None) -> bool:
    """Is `origin` (scheme://host[:port]) the one the browser addressed this request to (its Host header)?"""
    scheme, sep, netloc = origin.partition("://")
    if not sep or not host or scheme not in ("http", "https"):
        return False  # `null` (sandboxed frames, file: pages) and anything odd
    return _endpoint(scheme, netloc.lower()) == _endpoint(scheme, host.strip().lower())


def cross_site_refusal(request: web.Request, allowed_origins: list[str]) -> str | None:
    """Why a state-changing request comes from another site's page, or None."""
    if request.method in SAFE_METHODS:
        return None
    origin = request.headers.get("Origin")
    if origin is not None and origin.lower() in allowed_origins:
        return None
    fetch_site = request.headers.get("Sec-Fetch-Site", "").lower()
    if fetch_site in CROSS_SITE:
        return f"the browser marked this request {fetch_site} (Sec-Fetch-Site)"
    if fetch_site == "same-origin":  # the browser's own word (pages cannot set it); the chat page's POSTs may
        return None  # carry `Origin: null` under its Referrer-Policy: no-referrer
    if origin is not None and not same_origin(origin, request.headers.get("Host")):
        return f"it comes from a page on {origin}"
    return None


def cors_headers(origin: str) -> dict[str, str]:
    return {"Access-Control-Allow-Origin": origin, "Access-Control-Expose-Headers": CORS_EXPOSED, "Vary": "Origin"}


def preflight(request: web.Request, allowed_origins: list[str]) -> web.Response:
    origin = request.headers["Origin"]
    if origin.lower() not in allowed_origins:
        return error_response(Forbidden(f"origin {origin} may not call this API from a browser; add it to "
                                        f"router.allowed_origins to allow it", code="origin_not_allowed"))
    headers = {**cors_headers(origin), "Access-Control-Allow-Methods": CORS_METHODS,
               "Access-Control-Allow-Headers": CORS_HEADERS, "Access-Control-Max-Age": CORS_MAX_AGE}
    if request.headers.get("Access-Control-Request-Private-Network") == "true":
        headers["Access-Control-Allow-Private-Network"] = "true"  # Chrome: a public page calling a private address
    return web.Response(status=204, headers=headers)


def browser_guard(keys: Keys):
    @web.middleware
    async def guard(request: web.Request, handler):
        config = request.app[CONFIG].current
        settings = config.router
        host = request.headers.get("Host")
        if not keys.api and host is not None and not trusted_host(host, bind_address(config)[0],
                                                                  settings.allowed_hosts):
            return error_response(MisdirectedRequest(
                f"this router does not answer to the host name {host_name(host)!r} while its API has no key "
                f"(a page on that name may be a DNS-rebinding attack): use http://127.0.0.1, add the name to "
                f"router.allowed_hosts, or set ULLM_API_KEY", code="host_not_allowed"))
        if request.method == "OPTIONS" and "Origin" in request.headers and \
                "Access-Control-Request-Method" in request.headers:
            return preflight(request, settings.allowed_origins)
        why = cross_site_refusal(request, settings.allowed_origins)
        if why:
            return error_response(Forbidden(
                f"cross-site request refused: {why}. Web pages on other sites may not change or use this router; "
                f"to allow a browser app, add its origin to router.allowed_origins", code="cross_site_request"))
        return await handler(request)

    return guard


async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: an allowed origin may read the answer (streams too: this runs before the first byte)."""
    origin = request.headers.get("Origin")
    if origin and origin.lower() in request.app[CONFIG].current.router.allowed_origins:
        response.headers.update(cors_headers(origin))
