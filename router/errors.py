"""One error shape everywhere: {"error": {"message", "type", "param", "code"}}, as OpenAI clients expect."""

from __future__ import annotations

import errno
import json
import math

from aiohttp import web

# Marks answers the router produced itself, so users can tell them from errors an engine passed through.
ROUTER_ERROR_HEADER = "X-Unified-LLM-Error"
# Separates an engine failure's reason from the engine's own log lines quoted after it. Log text is for those
# who may read the logs (admins): inference clients and anonymous status readers get the reason only.
LOG_LINES_MARK = "; last log lines:\n"
# Statuses a retry of the same request cannot fix: they carry `x-should-retry: false`, which the `openai` SDK obeys
# (it would otherwise retry a 409 twice). 429 and 503 carry `Retry-After` instead.
NOT_RETRYABLE = {400, 404, 409, 413, 415, 422}
RETRY_AFTER_DEFAULT = 5  # seconds, for a 429/503 whose wait nothing better predicts
RETRY_AFTER_MAX = 60  # older `openai` SDKs ignore a longer Retry-After; newer ones give up past 120 s


def without_log_lines(message: str, engine: str) -> str:
    reason, quoted, _ = message.partition(LOG_LINES_MARK)
    return f"{reason} (the engine's log lines: GET /v1/engines/{engine}/logs with an admin key)" if quoted else message


class ApiError(Exception):
    status = 500
    type = "server_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.retry_after = retry_after  # seconds until a retry may succeed (429/503), when known
        if status is not None:
            self.status = status

    def headers(self) -> dict[str, str]:
        """What tells clients whether and when to retry: `Retry-After` on 429/503, `x-should-retry: false` on
        statuses a retry cannot fix."""
        if self.status in (429, 503):
            wait = self.retry_after if self.retry_after is not None else RETRY_AFTER_DEFAULT
            return {"Retry-After": str(min(RETRY_AFTER_MAX, max(1, math.ceil(wait))))}
        if self.status in NOT_RETRYABLE:
            return {"x-should-retry": "false"}
        return {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def without_log_lines(self, engine: str) -> "ApiError":
        """The same error for someone who may not read the engine's logs (a copy: subclasses may take other
        constructor arguments, e.g. StateNotRecorded)."""
        twin = type(self).__new__(type(self))  # not copy.copy: that calls the constructor with `args`
        twin.__dict__.update(self.__dict__)
        twin.message = without_log_lines(self.message, engine)
        Exception.__init__(twin, twin.message)
        return twin


class InvalidRequest(ApiError):
    status = 400
    type = "invalid_request_error"


class Forbidden(ApiError):
    status = 403
    type = "permission_error"


class MisdirectedRequest(ApiError):
    """A Host this router does not answer to (router/browser_guard.py: DNS rebinding)."""
    status = 421
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


class StateNotRecorded(ApiError):
    """The run folder could not take the intent of a load or unload (full, unwritable): nothing was changed."""
    status = 500
    type = "server_error"

    def __init__(self, what: str, folder: object, exc: Exception):
        full = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
        hint = "; free space there, then try again" if full else ""
        super().__init__(f"cannot record the {what} in {folder}: {exc}; nothing was changed{hint}",
                         code="run_folder_full" if full else "run_folder_unwritable", status=507 if full else None)


def error_response(error: ApiError, headers: dict | None = None) -> web.Response:
    return web.json_response(error.body(), status=error.status,
                             headers={ROUTER_ERROR_HEADER: "1", **error.headers(), **(headers or {})})


def sse_error_event(error: ApiError) -> bytes:
    """A streaming error is one `data:` event carrying the same JSON body, then the stream ends."""
    return f"data: {json.dumps(error.body())}\n\n".encode()
