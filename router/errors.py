"""One error shape everywhere: {"error": {"message", "type", "param", "code"}}, as OpenAI clients expect."""

from __future__ import annotations

import json

from aiohttp import web

# Marks answers the router produced itself, so users can tell them from errors an engine passed through.
ROUTER_ERROR_HEADER = "X-Unified-LLM-Error"


class ApiError(Exception):
    status = 500
    type = "server_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 status: int | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        if status is not None:
            self.status = status

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class InvalidRequest(ApiError):
    status = 400
    type = "invalid_request_error"


class NotFound(ApiError):
    status = 404
    type = "not_found_error"


class MethodNotAllowed(ApiError):
    status = 405
    type = "invalid_request_error"


class RequestTimeout(ApiError):
    status = 408
    type = "invalid_request_error"


class PayloadTooLarge(ApiError):
    status = 413
    type = "invalid_request_error"


class UnsupportedMediaType(ApiError):
    status = 415
    type = "invalid_request_error"


class TooManyRequests(ApiError):
    status = 429
    type = "rate_limit_error"


class EngineUnavailable(ApiError):
    """The engine has no model, is in error, or is still loading past the wait limit."""
    status = 503
    type = "engine_unavailable"


class UpstreamError(ApiError):
    """The engine could not be reached or failed mid-answer."""
    status = 502
    type = "upstream_error"


class GatewayTimeout(ApiError):
    """The engine did not answer, or stopped streaming, within the read timeout."""
    status = 504
    type = "upstream_timeout"


class LoadFailed(ApiError):
    status = 500
    type = "model_load_error"


def error_response(error: ApiError, headers: dict | None = None) -> web.Response:
    return web.json_response(error.body(), status=error.status,
                             headers={ROUTER_ERROR_HEADER: "1", **(headers or {})})


def sse_error_event(error: ApiError) -> bytes:
    """A streaming error is one `data:` event carrying the same JSON body, then the stream ends."""
    return f"data: {json.dumps(error.body())}\n\n".encode()
