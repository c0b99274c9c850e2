"""GET /v1/engines/{engine}/logs against the real stack: the tail and the follow stream carry the engines' own
output (read from supervisord), errors are OpenAI-shaped, and a follow stream ends when its client or the
server goes away."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
import urllib.request
from collections import Counter
from types import SimpleNamespace

import aiohttp
import pytest
from aiohttp import web

from engines.spec import MAX_INSTANCES, instance_name
from router.handlers import logs
from router.state import ENGINES, LOG_FOLLOWERS, SUPERVISOR
from router.supervisor import Supervisor, SupervisorError
from tests.stack import http_json, wait_for

# llama-server's own log lines: "0.00.019.299 I srv  llama_server: listening on http://127.0.0.1:8002"
LLAMA_LINE = re.compile(r"^\d+\.\d{2}\.\d{3}\.\d{3} [DIWE] ")


def log_file(stack, engine: str) -> bytes:
    """The test may read the file to check the API against it; the router only reads through supervisord."""
    return (stack.home / "run" / "logs" / f"{engine}.log").read_bytes()


def as_lines(raw: bytes) -> list[str]:
    # supervisord's XML-RPC answer is XML, whose parser turns \r\n and a lone \r into \n
    return raw.decode().replace("\r\n", "\n").replace("\r", "\n").split("\n")


def tail(stack, engine: str, lines: int) -> list[str]:
    status, body = stack.api("GET", f"/v1/engines/{engine}/logs?lines={lines}", timeout=30)
    assert status == 200, body
    assert body["engine"] == engine and isinstance(body["lines"], list)
    assert all(isinstance(line, str) for line in body["lines"])
    return body["lines"]


def test_tail_of_llamacpp_is_llama_servers_own_output(stack):
    lines = tail(stack, "llamacpp", 50)
    whole = as_lines(log_file(stack, "llamacpp"))
    assert 0 < len(lines) <= 50 and lines[-1] != ""
    if len(whole) > 51:
        assert len(lines) == 50
    assert "\n".join(lines) in "\n".join(whole)  # consecutive lines of the real log
    assert any(LLAMA_LINE.match(line) for line in lines), lines

    everything = tail(stack, "llamacpp", 10000)
    port = stack.engine_ports["llamacpp"]
    assert any(line.startswith("[launcher] llamacpp: exec ") and f"--port {port}" in line for line in everything)
    assert any(f"llama_server: listening on http://127.0.0.1:{port}" in line for line in everything)


def test_tail_of_vllm_has_the_launcher_line_and_vllm_output(stack):
    lines = tail(stack, "vllm", 10000)
    port = stack.engine_ports["vllm"]
    execs = [i for i, line in enumerate(lines)
             if line.startswith("[launcher] vllm: exec ") and f"--port {port}" in line]
    assert execs, lines[:20]
    after = lines[execs[-1] + 1:]
    assert any("APIServer pid=" in line for line in after), after[:20]  # vLLM's own log prefix
    assert len(tail(stack, "vllm", 5)) == 5


def test_plain_text_tail(stack):
    status, raw = stack.api_raw("GET", "/v1/engines/llamacpp/logs?lines=7", None, content_type=None)
    assert status == 200
    req = urllib.request.Request(stack.base_url + "/v1/engines/llamacpp/logs?lines=7",
                                 headers={"Accept": "text/plain"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.headers.get_content_type() == "text/plain"
        text = resp.read().decode()
    assert text.endswith("\n") and text[:-1].split("\n") == json.loads(raw)["lines"]


@pytest.mark.parametrize("query, status, param, code", [
    ("/v1/engines/llamacpp/logs?lines=abc", 400, "lines", "invalid_type"),
    ("/v1/engines/llamacpp/logs?lines=0", 400, "lines", "out_of_range"),
    ("/v1/engines/llamacpp/logs?lines=99999", 400, "lines", "out_of_range"),
    ("/v1/engines/llamacpp/logs?lines=-5", 400, "lines", "invalid_type"),
    ("/v1/engines/llamacpp/logs?follow=maybe", 400, "follow", "invalid_type"),
    ("/v1/engines/nope/logs", 404, "engine", "unknown_engine"),
    ("/v1/engines/nope/logs?follow=1", 404, "engine", "unknown_engine"),
])
def test_errors_are_openai_shaped(stack, query, status, param, code):
    got, body = stack.api("GET", query, timeout=30)
    assert got == status, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["param"], error["code"]) == (param, code)
    assert error["type"] == ("invalid_request_error" if status == 400 else "not_found_error")
    assert error["message"]


async def until_comment(resp: aiohttp.ClientResponse, comment: bytes, deadline: float) -> None:
    """Read on until an SSE comment starting with `comment`; fail at the deadline or the stream's end."""
    while True:
        raw = await asyncio.wait_for(resp.content.readline(), max(0.1, deadline - time.monotonic()))
        if not raw:
            raise EOFError("the stream ended")
        if raw.startswith(comment):
            return


async def next_line(resp: aiohttp.ClientResponse, deadline: float) -> str:
    """The next `data:` event's line (SSE comments skipped); fails at the deadline or at the stream's end."""
    while True:
        raw = await asyncio.wait_for(resp.content.readline(), max(0.1, deadline - time.monotonic()))
        if not raw:
            raise EOFError("the stream ended")
        if raw.startswith(b"data: "):
            return json.loads(raw[len(b"data: "):])["line"]


def test_follow_streams_new_llama_server_lines(stack):
    url = f"{stack.base_url}/v1/engines/llamacpp/logs?lines=3&follow=1"
    engine_url = f"http://127.0.0.1:{stack.engine_ports['llamacpp']}/v1/completions"

    async def scenario() -> tuple[list[str], list[str], int]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
            async with http.get(url) as resp:
                assert resp.status == 200 and resp.content_type == "text/event-stream"
                assert await asyncio.wait_for(resp.content.readline(), 10) == b": following the llamacpp log\n"
                deadline = time.monotonic() + 10
                first = [await next_line(resp, deadline) for _ in range(3)]
                before = len(log_file(stack, "llamacpp"))
                status, body = await asyncio.to_thread(
                    http_json, "POST", engine_url, {"prompt": "Once upon a time", "max_tokens": 4}, 60)
                assert status == 200, body
                deadline = time.monotonic() + 15
                new = [await next_line(resp, deadline)]
                while not any("release" in line for line in new):  # llama-server's last line for a request
                    new.append(await next_line(resp, deadline))
                return first, new, before

    first, new, before = asyncio.run(scenario())
    assert first == as_lines(log_file(stack, "llamacpp")[:before])[-4:-1]  # the tail sent first (ends with \n)
    written = "\n".join(as_lines(log_file(stack, "llamacpp")[before:]))
    assert all(line in written for line in new), (new, written)  # each one new since the stream opened
    assert all(LLAMA_LINE.match(line) for line in new), new


async def start_router_side(stack, shutdown_timeout: float = 60) -> tuple[web.AppRunner, str, asyncio.Event]:
    """The logs handler in this process, on the stack's real supervisord; `done` is set when a request ends.
    shutdown_timeout is run_app's default: a stream that ignored the shutdown would hold cleanup a minute."""
    done = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            return await logs.engine_logs(request)
        finally:
            done.set()

    app = web.Application()
    # the handler checks names only: each engine's instance names, as EngineGroup lists them
    app[ENGINES] = {name: SimpleNamespace(instances=[SimpleNamespace(name=instance_name(name, k))
                                                     for k in range(MAX_INSTANCES)]) for name in stack.engine_ports}
    app[SUPERVISOR] = Supervisor(stack.home / "run" / "supervisor.sock")
    app[LOG_FOLLOWERS] = Counter()
    app.router.add_get("/v1/engines/{engine}/logs", handler)
    runner = web.AppRunner(app, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}", done


def test_follow_ends_when_the_client_leaves(stack):
    async def scenario() -> float:
        runner, url, done = await start_router_side(stack)
        try:
            async with aiohttp.ClientSession() as http:
                resp = await http.get(url + "/v1/engines/llamacpp/logs?lines=1&follow=true")
                assert await asyncio.wait_for(resp.content.readline(), 10) == b": following the llamacpp log\n"
                engine_url = f"http://127.0.0.1:{stack.engine_ports['llamacpp']}/v1/completions"
                status, _ = await asyncio.to_thread(http_json, "POST", engine_url, {"prompt": "Hi", "max_tokens": 2})
                assert status == 200
                await next_line(resp, time.monotonic() + 10)  # still following: the engine's new lines arrive
                assert not done.is_set()
                resp.close()  # the client hangs up
                left = time.monotonic()
                await asyncio.wait_for(done.wait(), 10)
                return time.monotonic() - left
        finally:
            await runner.cleanup()

    ended = asyncio.run(scenario())
    print(f"\nthe follow stream ended {ended:.3f} s after its client left")
    assert ended < 5  # a deadline with room for a loaded 2-core box (its poll is 0.5 s)


def test_follow_ends_cleanly_when_the_server_stops(stack):
    async def scenario() -> tuple[float, bytes]:
        runner, url, done = await start_router_side(stack)
        async with aiohttp.ClientSession() as http:
            async with http.get(url + "/v1/engines/vllm/logs?lines=2&follow=1") as resp:
                assert await asyncio.wait_for(resp.content.readline(), 10) == b": following the vllm log\n"
                started = time.monotonic()
                await asyncio.wait_for(runner.cleanup(), 10)
                elapsed = time.monotonic() - started
                rest = await asyncio.wait_for(resp.content.read(), 5)  # ends (chunked EOF), no error
                assert done.is_set()
                return elapsed, rest

    elapsed, rest = asyncio.run(scenario())
    print(f"\nthe server stopped {elapsed:.3f} s after it was asked to, with a follow stream open")
    assert elapsed < 8, "an open follow stream held the server's shutdown"  # a deadline with room
    assert rest.count(b"data: ") >= 1


def test_a_window_starting_inside_a_utf8_character_is_read(stack):
    """vLLM's start-up banner is drawn with 3-byte characters; supervisord decodes a window cut inside one as
    UTF-8 and fails, so a tail cut there must move to the character's first byte."""
    raw = log_file(stack, "vllm")
    pos = next((i for i, byte in enumerate(raw) if byte >= 0xE0), None)  # the first byte of a 3-4 byte char
    if pos is None:
        pytest.skip("this vLLM printed no multi-byte character")
    end = raw.index(b"\n", pos) + 1
    supervisor = Supervisor(stack.home / "run" / "supervisor.sock")
    with pytest.raises(SupervisorError):  # the hazard is real: supervisord itself cannot answer this window
        asyncio.run(supervisor.call("readProcessStdoutLog", "vllm", pos + 1, end - pos - 1))
    for start in (pos + 1, pos + 2):
        text = asyncio.run(supervisor.read_log("vllm", start, end))
        assert text == raw[pos:end].decode().replace("\r\n", "\n").replace("\r", "\n")


def test_log_with_terminal_escapes_and_control_bytes_stays_readable(stack, restore_llamacpp):
    """The launcher and llama-server print the model path; one holding a colour code and a BEL puts bytes in
    the log that XML cannot carry. The failed load still quotes the log, and the tail still reads."""
    name = "bad-\x1b[31mred\x1b[0m-\x07bell.gguf"
    (stack.home / "scratch" / name).write_bytes(b"GGUF" + os.urandom(4096))
    status, body = stack.api("POST", "/v1/models/load",
                             {"engine": "llamacpp", "model_path": str(stack.home / "scratch" / name)}, timeout=120)
    assert status == 500 and body["error"]["type"] == "model_load_error", body
    assert "bad-red-\ufffdbell.gguf" in body["error"]["message"]
    lines = tail(stack, "llamacpp", 40)
    launcher = [line for line in lines if line.startswith("[launcher] llamacpp: serving")]
    assert launcher and launcher[-1].endswith("/scratch/bad-red-\ufffdbell.gguf"), lines


def test_follow_goes_on_after_the_log_is_cleared(stack):
    """`supervisorctl clear` empties the log as rotation starts a new one: the offset goes backwards."""
    url = f"{stack.base_url}/v1/engines/llamacpp/logs?lines=1&follow=1"
    engine_url = f"http://127.0.0.1:{stack.engine_ports['llamacpp']}/v1/completions"

    async def scenario() -> list[str]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
            async with http.get(url) as resp:
                assert resp.status == 200
                await next_line(resp, time.monotonic() + 10)
                before = len(log_file(stack, "llamacpp"))
                await asyncio.to_thread(stack.ctl, "clear", "llamacpp")
                assert len(log_file(stack, "llamacpp")) < before
                await until_comment(resp, b": the log started over", time.monotonic() + 10)
                status, body = await asyncio.to_thread(
                    http_json, "POST", engine_url, {"prompt": "Once upon a time", "max_tokens": 4}, 60)
                assert status == 200, body
                deadline = time.monotonic() + 15
                new = [await next_line(resp, deadline)]
                while not any("release" in line for line in new):
                    new.append(await next_line(resp, deadline))
                return new

    new = asyncio.run(scenario())
    whole = as_lines(log_file(stack, "llamacpp"))
    assert all(line in whole for line in new), (new, whole)
    assert any("print_timing" in line for line in new)


def followers(stack, engine: str = "llamacpp") -> int:
    return stack.status()[engine]["log_followers"]


def test_followers_are_capped_per_engine_and_freed_when_they_leave(stack):
    """Each follower polls supervisord, which also answers the router's status checks: a client opening
    hundreds must get 429s, not starve the router."""
    url = f"{stack.base_url}/v1/engines/llamacpp/logs?lines=1&follow=1"

    async def scenario() -> tuple[int, dict, int, int]:
        # the followers of earlier tests are gone (a client hanging up cancels its handler at once)
        await asyncio.to_thread(wait_for, lambda: followers(stack) == 0, 10, "earlier followers to leave")
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
            open_ = [await http.get(url) for _ in range(logs.MAX_FOLLOWERS)]
            assert [r.status for r in open_] == [200] * logs.MAX_FOLLOWERS
            async with http.get(url) as refused:
                status, body = refused.status, await refused.json()
            async with http.get(f"{stack.base_url}/v1/engines/vllm/logs?lines=1&follow=1") as other:
                other_status = other.status  # the cap is per engine
            for resp in open_:
                resp.close()
            await asyncio.to_thread(wait_for, lambda: followers(stack) == 0, 10, "the handlers to give their "
                                    "places back")
            async with http.get(url) as again:
                return status, body, other_status, again.status

    status, body, other_status, again = asyncio.run(scenario())
    assert status == 429 and body["error"]["code"] == "too_many_followers", body
    assert other_status == 200 and again == 200
    assert stack.status()["llamacpp"]["status"] == "loaded"
