"""The one error shape, OpenAI's: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

import json

from aiohttp import web


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> web.Response:
        return web.json_response(self.body(), status=self.status, headers=self.headers)

    def sse_event(self) -> bytes:
        return b"data: " + json.dumps(self.body()).encode() + b"\n\n"


def bad_request(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, param=param)


class QueueFull(ApiError):
    def __init__(self, limit: int):
        super().__init__(503, f"the engine is busy: {limit} requests are already waiting", "server_error",
                         code="queue_full", headers={"Retry-After": "1"})


class NotReady(ApiError):
    def __init__(self, what: str):
        super().__init__(503, f"the model is not loaded yet ({what})", "server_error", code="model_loading",
                         headers={"Retry-After": "1"})
