"""Optional API keys: `ULLM_API_KEY` guards the inference API, `ULLM_ADMIN_KEY` the operator endpoints that
change or reveal the system (load, unload, reload, engine logs). Unset: open, as on a single-user box.
Each may hold several keys separated by commas; without an admin key, the API key guards admin too; an
admin key also opens the inference API.
Clients send `Authorization: Bearer KEY` (what the openai SDK sends for `api_key`) or `X-API-Key: KEY`.
/health, /v1/status, /metrics and the OpenAPI document stay open: they carry no secrets and probes need them;
so do the chat page (`/`) and its assets (`/static/`): the page asks for the key and sends it with its API calls.
With keys set, /v1/status gives an engine failure's reason without the engine log lines quoted with it, and
neither it nor /v1/models gives model paths, unless the request carries an admin key (the logs endpoint is
admin-only). What a browser page may send is router/browser_guard.py's to decide, before the keys are checked.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass

from aiohttp import web

from router.errors import ApiError, error_response

OPEN_PATHS = ("/health", "/v1/status", "/metrics", "/openapi.json", "/static/")
PAGE = "/"  # the chat page: an exact match (as a prefix it would open everything)
ADMIN_PATHS = ("/v1/models/load", "/v1/models/unload", "/v1/config/", "/v1/engines/")


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

    def is_admin(self, request: web.Request) -> bool:
        """May this request do and see what admins may (load models, read engine logs)?"""
        return not self.admin or matches(presented_key(request), self.admin)


def auth_middleware(keys: Keys):
    @web.middleware
    async def check_key(request: web.Request, handler):
        path = request.path
        if path == PAGE or path.startswith(OPEN_PATHS):
            return await handler(request)
        admin = path.startswith(ADMIN_PATHS)
        allowed = keys.admin if admin else keys.inference
        if allowed and not matches(presented_key(request), allowed):
            which = "an admin key (ULLM_ADMIN_KEY)" if admin else "an API key (ULLM_API_KEY)"
            return error_response(Unauthorized(f"{request.path} needs {which}: send 'Authorization: Bearer KEY'",
                                               code="invalid_api_key"), headers={"WWW-Authenticate": "Bearer"})
        return await handler(request)

    return check_key
