"""Forward one OpenAI request to an engine and relay the answer; streams are relayed event by event as they
arrive (only the one event carrying token usage is ever parsed)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from router.errors import ApiError, GatewayTimeout, UpstreamError, sse_error_event
from router.metrics import RequestRecord
from router.usage import UsageTap, usage_from_json

log = logging.getLogger(__name__)

# Connection-level failures. The request is sent again only when it provably never reached the engine: the
# failure came before aiohttp handed any of it to the connection (`_Request.written`). Once any byte of it may have gone out, the engine
# may have begun generating, so the failure is the client's answer (502), never a second generation.
RETRYABLE = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)
SEND_ATTEMPTS = 3
# Hop-by-hop headers, and the length aiohttp sets itself. Content-Encoding is passed through: the body is
# relayed as it came (the client session does not decompress), so the header must describe it.
HOP_HEADERS = {"content-length", "transfer-encoding", "connection", "keep-alive"}


# Connections per engine: 256 streams hold 256 (streams to llama-server each open their own); beyond this many,
# requests wait in the pool for one instead of failing, and the router's descriptors stay bounded.
ENGINE_CONNECTIONS = 1024


class _Request(aiohttp.BytesPayload):
    """The request body, knowing whether aiohttp handed any of it to the connection: its headers go out with
    the first body write, and a write to a connection already closing fails before anything is sent."""

    written = False

    async def write(self, writer) -> None:
        await super().write(writer)
        self.written = True

    async def write_with_length(self, writer, content_length: int | None) -> None:
        await super().write_with_length(writer, content_length)
        self.written = True


def engine_session() -> aiohttp.ClientSession:
    """The one client session to the engines: pooled, closed before llama-server's 5 s idle timeout, and bodies
    left as the engine sent them (relayed byte for byte, never decoded)."""
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=ENGINE_CONNECTIONS, keepalive_timeout=4)
    return aiohttp.ClientSession(connector=connector, auto_decompress=False)


async def _send(http: aiohttp.ClientSession, url: str, payload: bytes, timeout: aiohttp.ClientTimeout,
                record: RequestRecord, headers: dict[str, str]) -> aiohttp.ClientResponse:
    for attempt in range(1, SEND_ATTEMPTS + 1):
        body = _Request(payload, content_type=headers.get("Content-Type", "application/json"))
        try:
            return await http.post(url, data=body, timeout=timeout, headers=headers)
        except aiohttp.ClientConnectorError:
            raise  # nothing listens there: retrying will not help
        except RETRYABLE as exc:
            if body.written or attempt == SEND_ATTEMPTS:
                raise  # it may have reached the engine (which may be generating): never sent twice
            record.resends += 1
            log.debug("sending %s again after %r: none of the request had been written", url, exc)
    raise AssertionError("unreachable")


class WaitNotes:
    """While a streaming request waits for its model, SSE comment lines tell the client why nothing has come
    yet (OpenAI clients ignore comments; proxies see traffic). The first note starts the 200 event stream, so
    whatever fails after it reaches the client as an SSE error event."""

    def __init__(self, request: web.Request):
        self.request = request
        self.response: web.StreamResponse | None = None

    async def note(self, text: str) -> None:
        if self.response is None:
            self.response = web.StreamResponse(headers=SSE_HEADERS)
            await self.response.prepare(self.request)
        await self.response.write(f": {text}\n\n".encode())

    async def fail(self, error: ApiError) -> web.StreamResponse:
        await self.response.write(sse_error_event(error))
        await self.response.write_eof()
        return self.response


SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@dataclass(frozen=True)
class Upstream:
    """What a request goes to: an engine instance, or a peer router (router/peers.py) with its key and timeouts."""
    who: str = "engine"  # in messages: "engine", "peer box2"
    headers: dict[str, str] = field(default_factory=dict)
    connect_timeout: float = 10
    first_byte_timeout: float | None = None  # for streams: their first byte comes at once (never for answers
    # in one piece, whose first byte comes after the whole generation)
    answers: set | None = None  # where its answers being relayed, or waited for, are kept meanwhile (a peer
    # closes them when it is found down, so that none waits out the read timeout)

    @property
    def code(self) -> str:
        return self.who.split()[0]  # error codes: engine_unreachable, peer_unreachable...


ENGINE = Upstream()


async def forward(request: web.Request, http: aiohttp.ClientSession, url: str, body: dict,
                  read_timeout: float, record: RequestRecord | None = None,
                  reuse_after_stream: bool = True, started_stream: web.StreamResponse | None = None,
                  target: Upstream = ENGINE) -> web.StreamResponse:
    """Send `body` to the engine at `url` and answer the client with the engine's answer, filling `record`
    (status, first-byte time, token usage, resends) for metrics. `reuse_after_stream=False` sends a stream
    request with `Connection: close`, so its connection never returns to the pool (for an engine that closes
    it after the stream anyway: reusing it would fail the next request). `started_stream`: the event stream
    already sent to the client (see WaitNotes); the engine's answer goes on in it, an error as an error event.
    `target`: a peer instead of an engine (its key, its timeouts, its name in the messages)."""
    who, code = target.who, target.code
    record = record or RequestRecord()
    started = time.monotonic()
    tap = None
    # plain bytes, cheap to relay; nothing of the client's request headers (its key) is passed on
    headers = {**target.headers, "Content-Type": "application/json", "Accept-Encoding": "identity"}
    streaming = body.get("stream") is True
    if streaming:
        if not reuse_after_stream:
            headers["Connection"] = "close"
        options = body.get("stream_options")
        asked = isinstance(options, dict) and options.get("include_usage") is True
        if not asked and (options is None or isinstance(options, dict)):  # anything else: the engine's to refuse
            body["stream_options"] = {**(options or {}), "include_usage": True}
        tap = UsageTap(strip=not asked)
    payload = json.dumps(body).encode()
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=target.connect_timeout, sock_read=read_timeout)
    first_byte = target.first_byte_timeout if streaming else None
    send = _send(http, url, payload, timeout, record, headers)
    if target.answers is not None:  # a peer: found down before it answers, the wait ends then
        send = _cut_when_down(send, target, record)
    try:
        upstream = await asyncio.wait_for(send, first_byte)
    except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
        record.failure = f"{code}_unreachable"
        why = f"no connection within {target.connect_timeout:g} s" if isinstance(
            exc, aiohttp.ConnectionTimeoutError) else str(exc)
        raise UpstreamError(f"{who} at {url} is unreachable: {why}", status=503, code=f"{code}_unreachable")
    except RETRYABLE as exc:
        record.failure = f"{code}_disconnected"
        raise UpstreamError(f"{who} at {url} dropped the connection: {exc}", code=f"{code}_disconnected")
    except asyncio.TimeoutError:
        record.failure = "timeout"
        waited = first_byte or read_timeout
        raise GatewayTimeout(f"{who} at {url} did not answer within {waited:.0f} s", code="timeout")

    async with upstream, _held(upstream, target.answers):
        record.status = upstream.status
        headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_HEADERS}
        if started_stream is not None and upstream.content_type != "text/event-stream":  # the engine refused
            try:
                data = await upstream.read()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 (the stream has begun: its last event says it)
                await _end_stream(started_stream, record, exc)
                return started_stream
            await started_stream.write(b"data: " + data.strip() + b"\n\n" if _is_error(data) else sse_error_event(
                UpstreamError(f"engine answered {upstream.status} with no error body", code="engine_failed")))
            await started_stream.write_eof()
            return started_stream
        if upstream.content_type != "text/event-stream":
            try:
                data = await upstream.read()
            except asyncio.TimeoutError:
                record.failure = "timeout"
                raise GatewayTimeout(f"{who} at {url} stopped answering for {read_timeout:.0f} s", code="timeout")
            except aiohttp.ClientError as exc:
                record.failure = f"{code}_failed"
                raise UpstreamError(f"{who} failed while answering: {exc!r}", code=f"{code}_failed")
            record.first_byte_after = time.monotonic() - started
            record_usage(record, usage_from_json(data) if upstream.status == 200 else None)
            return web.Response(body=data, status=upstream.status, headers=headers)

        response = started_stream or web.StreamResponse(status=upstream.status, headers=headers)
        if started_stream is None:
            await response.prepare(request)
        tap = tap or UsageTap(strip=False)
        try:
            await relay_stream(upstream, response, read_timeout, tap, record, started, target)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 (the stream has begun: nothing may reach the middleware)
            await _end_stream(response, record, exc)
        record_usage(record, tap.usage)
        return response


class _PendingAnswer:
    """A request sent to a peer and not answered yet, kept with the peer's answers: closing it (the peer was found
    down) cancels the wait."""

    def __init__(self, waiting: asyncio.Future):
        self.waiting, self.closed = waiting, False

    def close(self) -> None:
        self.closed = True
        self.waiting.cancel()


async def _cut_when_down(send, peer: Upstream, record: RequestRecord) -> aiohttp.ClientResponse:
    """`send`, ended with an error (502) when the peer is found down before it answers: a box that vanished without
    closing its connections would leave an answer in one piece, whose first byte comes only after the whole
    generation, waiting for the read timeout (600 s as shipped)."""
    waiting = asyncio.ensure_future(send)
    pending = _PendingAnswer(waiting)
    peer.answers.add(pending)
    try:
        return await waiting
    except asyncio.CancelledError:
        if pending.closed and not asyncio.current_task().cancelling():  # not the client leaving: the peer went
            record.failure = f"{peer.code}_failed"
            raise UpstreamError(f"{peer.who} went down before it answered", code=f"{peer.code}_failed") from None
        raise
    finally:
        peer.answers.discard(pending)


@contextlib.asynccontextmanager
async def _held(upstream: aiohttp.ClientResponse, answers: set | None):
    if answers is None:
        yield
        return
    answers.add(upstream)
    try:
        yield
    finally:
        answers.discard(upstream)


async def _end_stream(response: web.StreamResponse, record: RequestRecord, exc: Exception) -> None:
    """A failure after the event stream began: its last event, never a second response written into it."""
    log.warning("stream relay failed after it began: %r", exc)
    error = exc if isinstance(exc, ApiError) else UpstreamError(f"relaying the stream failed: {exc!r}",
                                                                 code="engine_failed")
    record.status = error.status
    try:
        await response.write(sse_error_event(error))
        await response.write_eof()
    except (ConnectionResetError, RuntimeError):  # the client is gone, or the stream already ended
        record.status = 499 if isinstance(exc, ConnectionResetError) else record.status


def _is_error(data: bytes) -> bool:
    try:
        return isinstance(json.loads(data).get("error"), dict)
    except (ValueError, AttributeError):
        return False


def record_usage(record: RequestRecord, usage: dict | None) -> None:
    if usage:
        record.prompt_tokens = usage.get("prompt_tokens")
        record.completion_tokens = usage.get("completion_tokens")


async def relay_stream(upstream: aiohttp.ClientResponse, response: web.StreamResponse, read_timeout: float,
                       tap: UsageTap, record: RequestRecord, started: float, target: Upstream = ENGINE) -> None:
    """Copy events as they arrive. An engine failure becomes a final SSE error event; a client that leaves
    makes us close the upstream connection, which is how both engines learn to abort the request."""
    while True:
        error: ApiError | None = None
        chunk = b""
        try:
            chunk = await upstream.content.readany()
        except asyncio.TimeoutError:
            error = GatewayTimeout(f"{target.who} stopped streaming for {read_timeout:.0f} s", code="timeout")
        except (aiohttp.ClientError, OSError, ValueError) as exc:  # any read failure: OSError, HTTP parse errors
            error = UpstreamError(f"{target.who} failed mid-stream: {exc!r}", code=f"{target.code}_failed")
        if chunk and record.first_byte_after is None:
            record.first_byte_after = time.monotonic() - started
        try:
            if chunk:
                if out := tap.feed(chunk):
                    await response.write(out)
                    record.delivered = out.endswith(b"data: [DONE]\n\n")
                continue
            await response.write(tap.flush())
            if error:
                record.status, record.failure = error.status, error.code
                await response.write(sse_error_event(error))
            await response.write_eof()
        except ConnectionResetError:
            log.info("client disconnected; closing the engine request")
            record.client_left()
            upstream.close()
        return
