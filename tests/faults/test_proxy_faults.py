"""The router's forwarding path against a fake engine that fails on cue: dies after a chosen chunk, stalls,
or drops a pooled connection. Real engines cannot do these on demand; tests/e2e covers real crashes."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import time

import aiohttp
import aiohttp.http_exceptions
import pytest
from aiohttp import web

from router.app import openai_errors
from router.metrics import RequestRecord
from router.proxy import _send, engine_session, forward

CHUNK = b'data: {"choices": [{"text": "tok"}]}\n\n'


def fake_engine(seen: dict | None = None) -> web.Application:
    seen = seen if seen is not None else {}
    seen["drop"] = 0

    async def dies_after_three_chunks(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for _ in range(3):
            await resp.write(CHUNK)
        await asyncio.sleep(0.1)
        request.transport.close()  # the engine process is gone: no final chunk, no [DONE]
        return resp

    async def stalls(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(CHUNK)
        await asyncio.sleep(60)
        return resp

    async def drops_first_connection(request: web.Request) -> web.Response:
        seen["drop"] += 1
        if seen["drop"] == 1:
            request.transport.close()  # like llama-server closing a keep-alive connection under load
            return web.Response()
        return web.json_response({"choices": [{"text": "ok"}], "attempt": seen["drop"]})

    async def streams_slowly(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        try:
            for _ in range(200):  # 10 s of tokens unless the reader goes away
                await resp.write(CHUNK)
                await asyncio.sleep(0.05)
        except (ConnectionResetError, asyncio.CancelledError):  # the router closed the request
            seen["aborted_at"] = time.monotonic()
        return resp

    async def lingers_after_done(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(CHUNK + b"data: [DONE]\n\n")
        await asyncio.sleep(2)  # a slow end of stream: the client has the whole answer and leaves first
        return resp

    async def answers_slowly(request: web.Request) -> web.Response:
        try:
            await asyncio.sleep(10)  # a long non-streaming generation
        except asyncio.CancelledError:  # the router closed the request: stop generating
            seen["aborted_at"] = time.monotonic()
            raise
        return web.json_response({"choices": [{"text": "late"}]})

    async def compresses(request: web.Request) -> web.Response:
        seen["accept_encoding"] = request.headers.get("Accept-Encoding")
        body = json.dumps({"choices": [{"text": "plain"}]}).encode()
        if request.path.endswith("always") or "gzip" in seen["accept_encoding"]:
            return web.Response(body=gzip.compress(body), headers={"Content-Encoding": "gzip",
                                                                   "Content-Type": "application/json"})
        return web.Response(body=body, content_type="application/json")

    app = web.Application()
    app.router.add_post("/slow-json", answers_slowly)
    app.router.add_post("/compresses-when-asked", compresses)
    app.router.add_post("/compresses-always", compresses)
    app.router.add_post("/dies", dies_after_three_chunks)
    app.router.add_post("/slow", streams_slowly)
    app.router.add_post("/lingers", lingers_after_done)
    app.router.add_post("/stalls", stalls)
    app.router.add_post("/drops", drops_first_connection)
    return app


async def start(app: web.Application) -> tuple[web.AppRunner, str]:
    # handler_cancellation as the router runs it (router/__main__.py): a client hanging up cancels the handler
    runner = web.AppRunner(app, shutdown_timeout=0.5, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, f"http://127.0.0.1:{port}"


async def through_router(path: str, read_timeout: float = 30, seen: dict | None = None,
                         read_chunks: int | None = None, give_up_after: float | None = None
                         ) -> tuple[int, bytes, float]:
    """POST through a router-side relay to the fake engine; with read_chunks, hang up after that many reads;
    with give_up_after, hang up that many seconds after sending (a client timeout on a non-streamed answer)."""
    engine_runner, engine_url = await start(fake_engine(seen))
    async with engine_session() as upstream:
        async def relay(request: web.Request) -> web.StreamResponse:
            return await forward(request, upstream, engine_url + path, {"prompt": "x"}, read_timeout)

        router = web.Application(middlewares=[openai_errors])  # errors rendered as the router renders them
        router.router.add_post("/v1/completions", relay)
        router_runner, router_url = await start(router)
        try:
            started = time.monotonic()
            async with aiohttp.ClientSession() as client:
                if give_up_after is not None:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await client.post(router_url + "/v1/completions", json={},
                                          timeout=aiohttp.ClientTimeout(total=give_up_after))
                    left = time.monotonic()
                    await wait_until(lambda: "aborted_at" in seen, 5)
                    return 0, b"", seen.get("aborted_at", float("inf")) - left
                async with client.post(router_url + "/v1/completions", json={}) as resp:
                    if read_chunks is None:
                        return resp.status, await resp.read(), time.monotonic() - started
                    for _ in range(read_chunks):
                        await resp.content.readany()
                    resp.close()  # the client leaves mid-stream
                    left = time.monotonic()
            await wait_until(lambda: "aborted_at" in seen, 5)  # the abort travels client → router → engine
            return 0, b"", seen.get("aborted_at", float("inf")) - left
        finally:
            await router_runner.cleanup()
            await engine_runner.cleanup()


async def wait_until(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)


def last_event(body: bytes) -> dict:
    events = [line for line in body.split(b"\n") if line.startswith(b"data: ")]
    return json.loads(events[-1][len(b"data: "):])


# Deadlines with room for a loaded 2-core box; each test prints what it measured.
def test_engine_dying_mid_stream_ends_the_stream_with_an_error_event():
    status, body, elapsed = asyncio.run(through_router("/dies"))
    print(f"\nengine died mid-stream: the stream ended {elapsed:.3f} s after the request")
    assert status == 200
    assert body.count(CHUNK) == 3  # everything the engine sent reached the client, unchanged
    error = last_event(body)["error"]
    assert error["type"] == "upstream_error" and "mid-stream" in error["message"]
    assert elapsed < 10


def test_stalled_stream_ends_with_a_timeout_event():
    status, body, elapsed = asyncio.run(through_router("/stalls", read_timeout=1))
    print(f"\nstalled stream, read timeout 1 s: ended after {elapsed:.3f} s")
    assert status == 200 and body.startswith(CHUNK)
    assert last_event(body)["error"]["type"] == "upstream_timeout"
    assert 1 <= elapsed < 15


def test_a_connection_dropped_after_the_request_was_sent_is_not_sent_again():
    """The engine read the request and closed the connection: it may have begun generating, so the router does
    not send it a second time (the client hears why)."""
    seen: dict = {}
    status, body, _ = asyncio.run(through_router("/drops", seen=seen))
    assert seen["drop"] == 1, "the request reached the engine twice"
    assert status == 502 and json.loads(body)["error"]["code"] == "engine_disconnected"


class _FailingSession:
    """A client session whose first sends fail with `exc`, having handed the request to the connection (or not)."""

    def __init__(self, exc: Exception, written: bool, failures: int = 1):
        self.exc, self.written, self.failures, self.posts = exc, written, failures, 0

    async def post(self, url, *, data, **_):
        self.posts += 1
        if self.posts <= self.failures:
            data.written = self.written
            raise self.exc
        return "answer"


@pytest.mark.parametrize("exc", [aiohttp.ServerDisconnectedError(), aiohttp.ClientOSError(32, "Broken pipe")])
def test_a_request_is_sent_again_only_when_none_of_it_was_written(exc):
    async def scenario():
        record = RequestRecord()
        unwritten = _FailingSession(exc, written=False)
        timeout = aiohttp.ClientTimeout(total=1)
        assert await _send(unwritten, "http://engine", b"{}", timeout, record, {}) == "answer"
        assert unwritten.posts == 2 and record.resends == 1
        written = _FailingSession(exc, written=True)
        with pytest.raises(type(exc)):
            await _send(written, "http://engine", b"{}", timeout, record, {})
        assert written.posts == 1 and record.resends == 1
    asyncio.run(scenario())


def test_a_connection_closing_before_the_write_is_sent_again_and_a_written_request_is_marked():
    """Against the real session: a pooled connection the engine closed before the request (what cpp-httplib
    does after a stream) fails the write before anything is sent, so the request goes again."""
    async def scenario():
        seen: dict = {}
        runner, url = await start(fake_engine(seen))
        try:
            async with engine_session() as http:
                record = RequestRecord()
                timeout = aiohttp.ClientTimeout(total=10)
                first = await _send(http, url + "/drops", b"{}", timeout, record, {})  # reaches it: dropped
                raise AssertionError(f"the dropped request was answered: {first.status}")
        except aiohttp.ServerDisconnectedError:
            assert seen["drop"] == 1 and record.resends == 0  # it was written: not sent again
        finally:
            await runner.cleanup()
    asyncio.run(scenario())


def test_a_write_to_a_closing_connection_is_not_marked_written(monkeypatch):
    async def scenario():
        from aiohttp.http_writer import StreamWriter

        async def closing(self, chunk, **_):
            raise aiohttp.ClientConnectionResetError("Cannot write to closing transport")
        monkeypatch.setattr(StreamWriter, "write", closing)
        seen: dict = {}
        runner, url = await start(fake_engine(seen))
        try:
            async with engine_session() as http:
                record = RequestRecord()
                with pytest.raises(aiohttp.ClientOSError):
                    await _send(http, url + "/drops", b"{}", aiohttp.ClientTimeout(total=10), record, {})
                assert record.resends == 2 and seen["drop"] == 0  # tried 3 times, never reached the engine
        finally:
            monkeypatch.undo()
            await runner.cleanup()
    asyncio.run(scenario())


@pytest.mark.parametrize("failure", [RuntimeError("reader broke"), ValueError("bad chunk"),
                                     aiohttp.http_exceptions.TransferEncodingError("bad chunk size")])
def test_a_read_error_after_the_stream_began_ends_it_with_an_event_not_a_second_response(failure, monkeypatch):
    """The router's middleware must never see it: it would write a whole second HTTP response into the stream."""
    reads = {"n": 0}
    real_readany = aiohttp.StreamReader.readany

    async def readany(self):
        if asyncio.current_task() is not reads.get("client"):  # the router reading the engine's stream
            reads["n"] += 1
            if reads["n"] == 3:  # after two chunks have been relayed
                raise failure
        return await real_readany(self)

    async def scenario():
        engine_runner, engine_url = await start(fake_engine())
        async with engine_session() as upstream:
            async def relay(request: web.Request) -> web.StreamResponse:
                return await forward(request, upstream, engine_url + "/slow", {"prompt": "x"}, 30)
            router = web.Application(middlewares=[openai_errors])
            router.router.add_post("/v1/completions", relay)
            router_runner, router_url = await start(router)
            try:
                reads["client"] = asyncio.current_task()
                monkeypatch.setattr(aiohttp.StreamReader, "readany", readany)
                async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as client:
                    async with client.post(router_url + "/v1/completions", json={}) as resp:
                        return resp.status, await resp.read()  # a stream left without its end hangs here
            finally:
                monkeypatch.undo()
                await router_runner.cleanup()
                await engine_runner.cleanup()
    status, body = asyncio.run(scenario())
    assert status == 200 and body.startswith(CHUNK)
    assert b"HTTP/1.1" not in body and b"internal router error" not in body, body[-400:]
    error = last_event(body)["error"]
    assert error["type"] == "upstream_error" and error["code"] == "engine_failed", error


def test_client_leaving_mid_stream_aborts_the_engine_request():
    seen: dict = {}
    _, _, abort_delay = asyncio.run(through_router("/slow", seen=seen, read_chunks=2))
    print(f"\nclient left mid-stream: the engine's request was closed {abort_delay:.3f} s later")
    assert abort_delay < 4, "the engine kept generating for a client that had left"


@pytest.mark.parametrize("path, status", [("/lingers", 200), ("/slow", 499)])
def test_a_client_that_leaves_after_done_had_the_whole_answer_and_one_that_leaves_before_did_not(path, status):
    """The openai SDK hangs up as soon as it reads `data: [DONE]`, often before the stream's end reaches it: that
    request succeeded (200 in the metrics, on a peer too); leaving before [DONE] is nginx's 499."""
    record = RequestRecord()

    async def scenario() -> None:
        engine_runner, engine_url = await start(fake_engine({}))
        ended = asyncio.Event()
        async with engine_session() as upstream:
            async def relay(request: web.Request) -> web.StreamResponse:
                try:
                    return await forward(request, upstream, engine_url + path, {"prompt": "x", "stream": True}, 30,
                                         record)
                except asyncio.CancelledError:  # as router/handlers/openai_api.py answers a client hanging up
                    record.client_left()
                    raise
                finally:
                    ended.set()
            router = web.Application()
            router.router.add_post("/v1/completions", relay)
            router_runner, router_url = await start(router)
            try:
                async with aiohttp.ClientSession() as client:
                    async with client.post(router_url + "/v1/completions", json={}) as resp:
                        read = b""
                        while b"[DONE]" not in read and b"tok" not in read[len(CHUNK):]:  # [DONE], or two tokens
                            read += await resp.content.readany()
                        resp.close()
                await asyncio.wait_for(ended.wait(), 5)  # the handler's end, cancelled or not
            finally:
                await router_runner.cleanup()
                await engine_runner.cleanup()
    asyncio.run(scenario())
    assert record.status == status, record


def test_client_leaving_a_non_streamed_request_aborts_the_engine_request():
    seen: dict = {}
    _, _, abort_delay = asyncio.run(through_router("/slow-json", seen=seen, give_up_after=0.5))
    print(f"\nclient left a non-streamed request: the engine's request was closed {abort_delay:.3f} s later")
    assert abort_delay < 4, "the engine kept generating for a client that had left"


def test_the_router_asks_engines_for_plain_bytes():
    seen: dict = {}
    status, body, _ = asyncio.run(through_router("/compresses-when-asked", seen=seen))
    assert seen["accept_encoding"] == "identity"
    assert status == 200 and json.loads(body) == {"choices": [{"text": "plain"}]}


def test_an_encoded_answer_keeps_its_content_encoding():
    status, body, _ = asyncio.run(through_router("/compresses-always", seen={}))
    assert status == 200 and json.loads(body) == {"choices": [{"text": "plain"}]}  # decoded by the client


def test_a_stalled_stream_from_a_peer_ends_with_an_error_event_once_the_peer_is_found_down():
    """A peer box that vanished without closing its connections: the stream relayed from it stalls. Once the
    peer is marked down (here by hand; in the router by its probe), the stream ends with an error event rather
    than at the read timeout (600 s as shipped)."""
    from router.auth import Keys
    from router.config import PeerSettings
    from router.peers import Peer
    from router.proxy import Upstream

    async def scenario() -> bytes:
        engine_runner, engine_url = await start(fake_engine())
        async with engine_session() as upstream:
            peer = Peer("box2", PeerSettings(url=engine_url), upstream, Keys())
            target = Upstream("peer box2", answers=peer.answers)

            async def relay(request: web.Request) -> web.StreamResponse:
                return await forward(request, upstream, engine_url + "/stalls", {"prompt": "x", "stream": True},
                                     600, target=target)
            router = web.Application(middlewares=[openai_errors])
            router.router.add_post("/v1/completions", relay)
            router_runner, router_url = await start(router)
            try:
                async with aiohttp.ClientSession() as client:
                    async with client.post(router_url + "/v1/completions", json={}) as resp:
                        first = await resp.content.readany()  # the one chunk before the stall
                        assert peer.answers, "the answer being relayed is held by the peer"
                        peer.unreachable("no answer within 10 s")
                        rest = await asyncio.wait_for(resp.read(), 10)
                        assert not peer.answers
                        return first + rest
            finally:
                await router_runner.cleanup()
                await engine_runner.cleanup()
    body = asyncio.run(scenario())
    last = [line for line in body.decode().splitlines() if line.startswith("data: ")][-1]
    error = json.loads(last[6:])["error"]
    assert error["code"] == "peer_failed" and "peer box2 failed mid-stream" in error["message"], error


def test_an_answer_in_one_piece_from_a_peer_found_down_before_it_answers_ends_with_a_502_at_once():
    """The same vanished box, asked for an answer in one piece: its first byte would come only after the whole
    generation, so nothing is being relayed yet. Found down, the wait ends with 502 peer_failed, and the request
    to it is closed, instead of waiting for the read timeout."""
    from router.auth import Keys
    from router.config import PeerSettings
    from router.peers import Peer
    from router.proxy import Upstream

    seen: dict = {}

    async def scenario() -> tuple[int, dict, float]:
        engine_runner, engine_url = await start(fake_engine(seen))
        async with engine_session() as upstream:
            peer = Peer("box2", PeerSettings(url=engine_url), upstream, Keys())
            record = RequestRecord()

            async def relay(request: web.Request) -> web.StreamResponse:
                return await forward(request, upstream, engine_url + "/slow-json", {"prompt": "x"}, 600, record,
                                     target=Upstream("peer box2", answers=peer.answers))
            router = web.Application(middlewares=[openai_errors])
            router.router.add_post("/v1/completions", relay)
            router_runner, router_url = await start(router)
            try:
                async with aiohttp.ClientSession() as client:
                    asking = asyncio.ensure_future(client.post(router_url + "/v1/completions", json={}))
                    await wait_until(lambda: peer.answers, 5)
                    assert peer.answers, "the request waiting for the peer is held by it"
                    marked = time.monotonic()
                    peer.unreachable("no answer within 10 s")
                    resp = await asyncio.wait_for(asking, 5)
                    ended = time.monotonic() - marked
                    body = await resp.json()
                    assert not peer.answers and record.failure == "peer_failed"
                    await wait_until(lambda: "aborted_at" in seen, 5)  # and the peer's request is closed
                    return resp.status, body, ended
            finally:
                await router_runner.cleanup()
                await engine_runner.cleanup()
    status, body, ended = asyncio.run(scenario())
    print(f"\npeer found down before its answer: 502 {ended:.3f} s later")
    assert status == 502 and body["error"]["code"] == "peer_failed", body
    assert body["error"]["message"] == "peer box2 went down before it answered"
    assert "aborted_at" in seen, "the request to the peer was left open"
