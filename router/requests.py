"""Reading and checking request bodies: every problem becomes a clear OpenAI-style 4xx."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from router.errors import InvalidRequest, RequestTimeout, UnsupportedMediaType
from router.state import CONFIG


def require_json(request: web.Request) -> None:
    """A request with a body must say `Content-Type: application/json` (415 otherwise, also without the header).
    This keeps browsers' no-preflight bodies out (form posts, text/plain, a `no-cors` fetch's Blob, which goes
    without a Content-Type): a page can only send JSON after a CORS preflight. A POST without a body is fine
    (`curl -X POST .../v1/config/reload`)."""
    if not request.body_exists:
        return
    sent = request.headers.get("Content-Type")
    if sent is None or request.content_type != "application/json":
        raise UnsupportedMediaType(f"Content-Type must be application/json, not "
                                   f"{request.content_type if sent is not None else 'absent'}",
                                   code="unsupported_media_type")


@web.middleware
async def json_bodies(request: web.Request, handler):
    """require_json for every POST, whether its handler reads the body or not."""
    if request.method == "POST":
        require_json(request)
    return await handler(request)


async def json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object (after require_json)."""
    require_json(request)
    limit = request.app[CONFIG].current.router.body_read_timeout_seconds
    try:  # bounded: a client trickling its body byte by byte must not hold a handler forever
        raw = await asyncio.wait_for(request.read(), limit)  # raises 413 past the app's client_max_size
    except asyncio.TimeoutError as exc:
        raise RequestTimeout(f"the request body was not received within {limit:g} seconds",
                             code="body_read_timeout") from exc
    if not raw.strip():
        raise InvalidRequest("request body is empty; send a JSON object", code="empty_body")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}", code="invalid_json") from exc
    except RecursionError as exc:
        raise InvalidRequest("request body is nested too deeply", code="invalid_json") from exc
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object", code="invalid_json")
    return body


def optional(body: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
    """body[key] checked against `kind` (bools are not ints), or default when absent or null."""
    value = body.get(key)
    if value is None:
        return default
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise InvalidRequest(f"{key!r} must be a {names}, not {type(value).__name__}", param=key,
                             code="invalid_type")
    return value


# OpenAI's bounds. Engines differ outside them (llama-server reads max_tokens -1 as "until the context is full"
# and wraps values past 2**31), so the router refuses them itself, the same way for both engines.
COUNT_BOUNDS = {"max_tokens": (1, 2**31 - 1), "max_completion_tokens": (1, 2**31 - 1), "n": (1, 128)}


def check_counts(body: dict[str, Any]) -> None:
    for key, (low, high) in COUNT_BOUNDS.items():
        value = optional(body, key, int)
        if value is not None and not low <= value <= high:
            raise InvalidRequest(f"{key!r} must be from {low} to {high}, not {value}", param=key, code="out_of_range")
