"""Optional API keys: `ULLM_API_KEY` guards the inference API, `ULLM_ADMIN_KEY` the operator endpoints that
change or reveal the system (load, unload, reload, engine logs). Unset: open, as on a single-user box.
Each may hold several keys separated by commas; without an admin key, the API key guards admin too; an
admin key also opens the inference API.
Clients send `Authorization: Bearer KEY` (what the openai SDK sends for `api_key`) or `X-API-Key: KEY`.
Each route declares who may call it where it is defined, with `@audience(...)` beside its `@routes.get/post`:
- `open`: no key ever. /health, /v1/status, the metrics and the OpenAPI document carry no secrets and probes
  need them; the chat page and its assets ask for the key and send it with their API calls.
- `inference`: the API key (or an admin key).
- `admin`: the admin key (or, without one, the API key). A route that declares nothing is admin's: a forgotten
  declaration fails closed.
With keys set, /v1/status gives an engine failure's reason without the engine log lines quoted with it, and
neither it nor /v1/models gives model paths, unless the request carries an admin key (the logs endpoint is
admin-only). What a browser page may send is router/browser_guard.py's to decide, before the keys are checked.
"""

from __future__ import annotations

import enum
import functools
import hmac
import logging
import os
from dataclasses import dataclass
from typing import Callable, TypeVar

from aiohttp import web

from router.errors import ApiError, error_response

log = logging.getLogger(__name__)
Handler = TypeVar("Handler", bound=Callable)


class Audience(enum.Enum):
    OPEN = "open"
    INFERENCE = "inference"
    ADMIN = "admin"


def audience(name: str) -> Callable[[Handler], Handler]:
    """Declare who may call a route's handler: `@audience("admin")`. A misspelt name fails at import."""
    declared = Audience(name)

    def mark(handler: Handler) -> Handler:
        handler.audience = declared
        return handler

    return mark


def declared_audience(handler: Callable) -> Audience | None:
    return getattr(handler, "audience", None)


@functools.cache  # once per handler, not once per request
def report_undeclared(handler: Callable) -> None:
    log.error("bug: route handler %s.%s declares no @audience; it is treated as admin-only",
              handler.__module__, handler.__qualname__)


def route_audience(handler: Callable) -> Audience:
    """Who may call a route: its declared audience, or admin when it declares none (fail closed)."""
    declared = declared_audience(handler)
    if declared is None:
        report_undeclared(handler)
        return Audience.ADMIN
    return declared


def route_audiences(router: web.UrlDispatcher) -> dict[tuple[str, str], Audience]:
    """(method, path template) → audience for each route, leaving out the HEADs that aiohttp adds beside GETs."""
    return {(route.method, route.resource.canonical): route_audience(route.handler)
            for route in router.routes() if route.method != "HEAD" and route.resource}


def request_audience(request: web.Request) -> Audience:
    match = request.match_info
    if match.http_exception is not None:  # no route matched: only aiohttp's 404 or 405 answers, for API callers
        return Audience.INFERENCE
    return route_audience(match.handler)


class Unauthorized(ApiError):
    status = 401
    type = "authentication_error"


def keys_from_env(name: str) -> tuple[str, ...]:
    return tuple(key.strip() for key in os.environ.get(name, "").split(",") if key.strip())


def presented_key(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    return request.headers.get("X-API-Key", "").strip()


def matches(key: str, allowed: tuple[str, ...]) -> bool:
    return any(hmac.compare_digest(key.encode(), candidate.encode()) for candidate in allowed)


@dataclass(frozen=True)
class Keys:
    api: tuple[str, ...] = ()  # ULLM_API_KEY
    admin_only: tuple[str, ...] = ()  # ULLM_ADMIN_KEY

    @classmethod
    def from_env(cls) -> "Keys":
        return cls(keys_from_env("ULLM_API_KEY"), keys_from_env("ULLM_ADMIN_KEY"))

    @property
    def admin(self) -> tuple[str, ...]:
        """The keys that open admin endpoints; empty: admin is open."""
        return self.admin_only or self.api

    @property
    def inference(self) -> tuple[str, ...]:
        """The keys that open the inference API (an admin key does too); empty: inference is open."""
        return self.api + self.admin_only if self.api else ()

    def opening(self, audience: Audience) -> tuple[str, ...]:
        """The keys that open the routes of this audience; empty: anyone may call them."""
        return {Audience.OPEN: (), Audience.INFERENCE: self.inference, Audience.ADMIN: self.admin}[audience]

    def is_admin(self, request: web.Request) -> bool:
        """May this request do and see what admins may (load models, read engine logs)?"""
        return not self.admin or matches(presented_key(request), self.admin)


NEEDED_KEY = {Audience.INFERENCE: "an API key (ULLM_API_KEY)", Audience.ADMIN: "an admin key (ULLM_ADMIN_KEY)"}


def auth_middleware(keys: Keys):
    @web.middleware
    async def check_key(request: web.Request, handler):
        needed = request_audience(request)
        allowed = keys.opening(needed)
        if allowed and not matches(presented_key(request), allowed):
            return error_response(Unauthorized(f"{request.path} needs {NEEDED_KEY[needed]}: send 'Authorization: "
                                               f"Bearer KEY'", code="invalid_api_key"),
                                  headers={"WWW-Authenticate": "Bearer"})
        return await handler(request)

    return check_key
