"""Requests that aiohttp's HTTP parser rejects (oversized or duplicate headers, a malformed request line,
conflicting lengths) are answered before any router code runs, as plain text. `install()` makes those answers
the router's OpenAI-shaped JSON too, so every client sees one error shape.

aiohttp has no hook for this (its parser errors bypass middlewares and on_response_prepare), so its
RequestHandler.handle_error is wrapped: the original still logs and refuses once bytes were sent."""

from __future__ import annotations

from http import HTTPStatus

from aiohttp import web, web_protocol

from router.errors import ApiError, InvalidRequest, error_response

_plain_handle_error = web_protocol.RequestHandler.handle_error


def _json_handle_error(self, request, status: int = 500, exc: BaseException | None = None,
                       message: str | None = None) -> web.StreamResponse:
    _plain_handle_error(self, request, status, exc, message)  # logs; raises if a response had begun
    if status >= 500:
        error = ApiError(f"internal router error ({HTTPStatus(status).phrase})", status=status,
                         code="internal_error")
    else:
        error = InvalidRequest(f"malformed HTTP request: {message or HTTPStatus(status).phrase}", status=status,
                               code="malformed_http")
    response = error_response(error)
    response.force_close()  # the parser lost its place in the stream: this connection cannot carry another
    return response


def install() -> None:
    web_protocol.RequestHandler.handle_error = _json_handle_error
