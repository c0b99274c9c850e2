"""Reading and checking request bodies: every problem becomes a clear OpenAI-style 4xx."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from router.errors import InvalidRequest, UnsupportedMediaType


async def json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object. A missing Content-Type is tolerated; a non-JSON one is 415."""
    if request.content_type not in ("application/json", "application/octet-stream") and request.headers.get(
            "Content-Type"):
        raise UnsupportedMediaType(f"Content-Type must be application/json, not {request.content_type}",
                                   code="unsupported_media_type")
    raw = await request.read()  # raises 413 past the app's client_max_size
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
