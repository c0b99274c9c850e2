"""GET /v1/engines/{engine}/logs: the tail of an engine's own output (its supervisord program log, launcher
lines included), so a failed load can be read without a shell; `follow=1` streams new lines as SSE.

Everything is read through supervisord's XML-RPC (router/supervisor.py: log_size, read_log), never from the
log files by path. A follow stream polls; it ends when the client hangs up or the server stops.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass

from aiohttp import web

from router.auth import audience
from router.errors import ApiError, InvalidRequest, NotFound, TooManyRequests
from router.engine_group import instance_names
from router.state import ENGINES, LOG_FOLLOWERS, SUPERVISOR
from router.supervisor import Supervisor, SupervisorError

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

DEFAULT_LINES = 100
MAX_LINES = 10_000
POLL_SECONDS = 0.5
MAX_FOLLOWERS = 16  # per engine: each polls supervisord, which also answers the router's status checks
KEEPALIVE_SECONDS = 15.0
FIRST_READ_BYTES = 16 * 1024  # grown ×4 until it holds the lines asked for
MAX_TAIL_BYTES = 8 * 1024 * 1024  # 10 000 long vLLM lines fit; past this, fewer lines come back
FOLLOW_READ_BYTES = 256 * 1024  # more than this between two polls: skip to the end (overflow)
MAX_PARTIAL_CHARS = 64 * 1024  # a line without its newline yet is held back, up to this much
TRUE, FALSE = {"1", "true"}, {"0", "false"}


@dataclass
class Tail:
    lines: list[str]  # complete lines, oldest first
    partial: str  # text after the last newline (a line still being written), "" when none
    offset: int  # where reading on continues


def lines_param(query) -> int:
    raw = query.get("lines")
    if raw is None:
        return DEFAULT_LINES
    if not (raw.isascii() and raw.isdigit()):
        raise InvalidRequest(f"'lines' must be an integer from 1 to {MAX_LINES}, not {raw!r}", param="lines",
                             code="invalid_type")
    count = int(raw)
    if not 1 <= count <= MAX_LINES:
        raise InvalidRequest(f"'lines' must be from 1 to {MAX_LINES}, not {count}", param="lines",
                             code="out_of_range")
    return count


def follow_param(query) -> bool:
    raw = query.get("follow", "0").strip().lower()
    if raw not in TRUE | FALSE:
        raise InvalidRequest(f"'follow' must be 1, true, 0 or false, not {query.get('follow')!r}", param="follow",
                             code="invalid_type")
    return raw in TRUE


async def read_tail(supervisor: Supervisor, name: str, count: int) -> Tail:
    """The log's last `count` lines: read a window from the end, and widen it while it holds too few."""
    size = await supervisor.log_size(name)
    nbytes = FIRST_READ_BYTES
    while True:
        start = max(0, size - nbytes)
        pieces = (await supervisor.read_log(name, start, size)).split("\n")
        if start > 0:
            pieces = pieces[1:]  # the window began inside a line (or on its first byte: one line too few)
        partial = pieces.pop() if pieces else ""
        if len(pieces) >= count or start == 0 or nbytes >= MAX_TAIL_BYTES:
            return Tail(pieces[-count:], partial, size)
        nbytes = min(nbytes * 4, MAX_TAIL_BYTES)


async def read_tail_or_503(supervisor: Supervisor, name: str, count: int) -> Tail:
    for attempt in range(3):
        try:
            return await read_tail(supervisor, name, count)
        except SupervisorError as exc:
            if attempt == 2:  # the last bytes can also end inside a character while being written: retry briefly
                raise ApiError(f"cannot read the {name} log: {exc}", status=503, code="log_unavailable") from exc
            await asyncio.sleep(0.2)
    raise AssertionError("unreachable")


class Follower:
    """Reads on from an offset and hands out whole lines; copes with rotation and bursts."""

    def __init__(self, supervisor: Supervisor, name: str, tail: Tail):
        self.supervisor, self.name = supervisor, name
        self.offset, self.partial = tail.offset, tail.partial
        self.started_over = False  # set by a poll that found the log rotated or cleared

    async def poll(self) -> list[str]:
        size = await self.supervisor.log_size(self.name)
        offset, partial, lines = self.offset, self.partial, []
        self.started_over = size < offset
        if self.started_over:  # rotated or cleared: the log started over; read the new one from the top
            offset, partial, lines = 0, "", ([partial] if partial else [])
        start = max(offset, size - FOLLOW_READ_BYTES)
        text = await self.supervisor.read_log(self.name, start, size)
        if start > offset:  # a burst bigger than one read: resync near the end, drop the cut first line
            partial, text = "", (text.split("\n", 1)[1] if "\n" in text else "")
        pieces = (partial + text).split("\n")
        partial = pieces.pop()
        if len(partial) > MAX_PARTIAL_CHARS:
            pieces.append(partial)
            partial = ""
        self.offset, self.partial = size, partial
        return lines + pieces

    async def skip_to_end(self) -> None:
        """After repeated failures (bytes supervisord cannot decode): go on from the current end."""
        self.offset, self.partial = await self.supervisor.log_size(self.name), ""


def events(lines: list[str]) -> bytes:
    return "".join(f"data: {json.dumps({'line': line})}\n\n" for line in lines).encode()


def client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def server_stopping(request: web.Request) -> bool:
    # aiohttp marks open connections closing when the server shuts down, then waits for their handlers; a
    # stream that never ends would hold the router's stop until supervisord kills it. Private, so guarded.
    return bool(getattr(request.protocol, "_close", False))


async def follow(request: web.Request, supervisor: Supervisor, name: str, count: int) -> web.StreamResponse:
    followers = request.app[LOG_FOLLOWERS]
    if followers[name] >= MAX_FOLLOWERS:
        raise TooManyRequests(f"{MAX_FOLLOWERS} clients already follow the {name} log; close one, or read the "
                              "tail without follow=1", code="too_many_followers")
    followers[name] += 1
    try:
        return await follow_counted(request, supervisor, name, count)
    finally:
        followers[name] -= 1


async def follow_counted(request: web.Request, supervisor: Supervisor, name: str, count: int) -> web.StreamResponse:
    tail = await read_tail_or_503(supervisor, name, count)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
    await response.prepare(request)
    follower, failures = Follower(supervisor, name, tail), 0
    loop = asyncio.get_running_loop()
    try:
        await response.write(f": following the {name} log\n\n".encode() + events(tail.lines))
        last_write = loop.time()
        while True:
            await asyncio.sleep(POLL_SECONDS)
            if client_gone(request) or server_stopping(request):
                break
            try:
                data, failures = events(await follower.poll()), 0
                if follower.started_over:
                    data = b": the log started over (rotated or cleared)\n\n" + data
            except SupervisorError as exc:
                data, failures = b"", failures + 1
                if failures == 1:
                    log.warning("following the %s log: %s", name, exc)
                if failures % 4 == 0:
                    try:
                        await follower.skip_to_end()
                    except SupervisorError:
                        pass  # supervisord itself is away: keep polling, the keep-alives go on
            if not data and loop.time() - last_write >= KEEPALIVE_SECONDS:
                data = b": keep-alive\n\n"
            if data:
                await response.write(data)
                last_write = loop.time()
    except ConnectionResetError:
        pass  # the client left
    log.debug("stopped following the %s log", name)
    return response


def wants_text(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "").lower()
    return "text/plain" in accept and "application/json" not in accept


@routes.get("/v1/engines/{engine}/logs")
@audience("admin")
async def engine_logs(request: web.Request) -> web.StreamResponse:
    name = request.match_info["engine"]  # an engine (its instance 0's log) or an instance: llamacpp-1
    engines = request.app[ENGINES]
    if name not in instance_names(engines):
        raise NotFound(f"no engine named {name!r}; engines are: {', '.join(engines) or 'none configured'} "
                       f"(instances: {', '.join(instance_names(engines))})", param="engine", code="unknown_engine")
    count = lines_param(request.query)
    supervisor = request.app[SUPERVISOR]  # it maps instance names to supervisord's program names
    if follow_param(request.query) and request.method == "GET":  # HEAD gets the headers of the plain tail
        return await follow(request, supervisor, name, count)
    tail = await read_tail_or_503(supervisor, name, count)
    lines = (tail.lines + [tail.partial] if tail.partial else tail.lines)[-count:]
    if wants_text(request):
        return web.Response(text="".join(line + "\n" for line in lines), content_type="text/plain")
    return web.json_response({"engine": name, "lines": lines})
