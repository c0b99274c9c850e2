"""Optional API keys: `ULLM_API_KEY` guards the inference API, `ULLM_ADMIN_KEY` the operator endpoints that
change or reveal the system (load, unload, reload, engine logs). Unset: open, as on a single-user box.
Each may hold several keys separated by commas; without an admin key, the API key guards admin too; an
admin key also opens the inference API.
Clients send `Authorization: Bearer KEY` (what the openai SDK sends for `api_key`) or `X-API-Key: KEY`.
/health, /v1/status, /metrics and the OpenAPI document stay open: they carry no secrets and probes need them;
so do the chat page (`/`) and its assets (`/static/`): the page asks for the key and sends it with its API calls.
"""

from __future__ import annotations

import hmac
import os

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


def auth_middleware(api_keys: tuple[str, ...], admin_keys: tuple[str, ...]):
    admin_keys = admin_keys or api_keys
    inference_keys = api_keys + admin_keys if api_keys else ()  # an admin key may also run inference

    @web.middleware
    async def check_key(request: web.Request, handler):
        path = request.path
        if path == PAGE or path.startswith(OPEN_PATHS):
            return await handler(request)
        admin = path.startswith(ADMIN_PATHS)
        allowed = admin_keys if admin else inference_keys
        if allowed and not matches(presented_key(request), allowed):
            which = "an admin key (ULLM_ADMIN_KEY)" if admin else "an API key (ULLM_API_KEY)"
            return error_response(Unauthorized(f"{request.path} needs {which}: send 'Authorization: Bearer KEY'",
                                               code="invalid_api_key"), headers={"WWW-Authenticate": "Bearer"})
        return await handler(request)

    return check_key
