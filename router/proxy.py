"""Forward one OpenAI request to an engine and relay the answer; streams are copied byte for byte."""

from __future__ import annotations

import asyncio
import json
import logging

import aiohttp
from aiohttp import web

from router.errors import ApiError, UpstreamError, sse_error_event

log = logging.getLogger(__name__)

# Failures where the engine closed a pooled keep-alive connection before reading our request: nothing was
# generated, so sending again is safe (llama-server's cpp-httplib does this under load; see docs).
RETRYABLE = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)
SEND_ATTEMPTS = 3
HOP_HEADERS = {"content-length", "transfer-encoding", "connection", "keep-alive", "content-encoding"}


class GatewayTimeout(ApiError):
    status = 504
    type = "upstream_timeout"


async def _send(http: aiohttp.ClientSession, url: str, payload: bytes,
                timeout: aiohttp.ClientTimeout) -> aiohttp.ClientResponse:
    for attempt in range(1, SEND_ATTEMPTS + 1):
        try:
            return await http.post(url, data=payload, timeout=timeout,
                                   headers={"Content-Type": "application/json"})
        except RETRYABLE as exc:
            if attempt == SEND_ATTEMPTS:
                raise
            log.debug("retrying %s after %r (no response byte received)", url, exc)
        except aiohttp.ClientConnectorError:
            raise
    raise AssertionError("unreachable")


async def forward(request: web.Request, http: aiohttp.ClientSession, url: str, body: dict,
                  read_timeout: float) -> web.StreamResponse:
    payload = json.dumps(body).encode()
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=read_timeout)
    try:
        upstream = await _send(http, url, payload, timeout)
    except aiohttp.ClientConnectorError as exc:
        raise UpstreamError(f"engine at {url} is unreachable: {exc}", status=503, code="engine_unreachable")
    except RETRYABLE as exc:
        raise UpstreamError(f"engine at {url} dropped the connection: {exc}", code="engine_disconnected")
    except asyncio.TimeoutError:
        raise GatewayTimeout(f"engine at {url} did not answer within {read_timeout:.0f} s", code="timeout")

    async with upstream:
        headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_HEADERS}
        is_stream = upstream.content_type == "text/event-stream"
        if not is_stream:
            try:
                data = await upstream.read()
            except asyncio.TimeoutError:
                raise GatewayTimeout(f"engine at {url} stopped answering for {read_timeout:.0f} s", code="timeout")
            except aiohttp.ClientError as exc:
                raise UpstreamError(f"engine failed while answering: {exc!r}", code="engine_failed")
            return web.Response(body=data, status=upstream.status, headers=headers)

        response = web.StreamResponse(status=upstream.status, headers=headers)
        await response.prepare(request)
        await relay_stream(upstream, response, read_timeout)
        return response


async def relay_stream(upstream: aiohttp.ClientResponse, response: web.StreamResponse, read_timeout: float) -> None:
    """Copy bytes as they arrive. An engine failure becomes a final SSE error event; a client that leaves
    makes us close the upstream connection, which is how both engines learn to abort the request."""
    while True:
        error: ApiError | None = None
        try:
            chunk = await upstream.content.readany()
        except asyncio.TimeoutError:
            error = GatewayTimeout(f"engine stopped streaming for {read_timeout:.0f} s", code="timeout")
        except aiohttp.ClientError as exc:
            error = UpstreamError(f"engine failed mid-stream: {exc!r}", code="engine_failed")
        try:
            if error:
                await response.write(sse_error_event(error))
            elif chunk:
                await response.write(chunk)
                continue
            await response.write_eof()
        except ConnectionResetError:
            log.info("client disconnected; closing the engine request")
            upstream.close()
        return
