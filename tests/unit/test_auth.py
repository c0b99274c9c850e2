"""Optional API keys, over real HTTP: inference and admin keys are separate, probes stay open, and a
refusal is the usual OpenAI-shaped error."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from router.app import openai_errors
from router.auth import Keys, auth_middleware

PATHS = [("GET", "/health"), ("GET", "/v1/status"), ("GET", "/metrics"), ("POST", "/v1/completions"),
         ("POST", "/v1/chat/completions"), ("GET", "/v1/models"), ("POST", "/v1/models/load"),
         ("POST", "/v1/config/reload"), ("GET", "/v1/engines/vllm/logs")]


async def statuses(api_keys: tuple, admin_keys: tuple, headers: dict) -> dict[str, int]:
    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application(middlewares=[openai_errors, auth_middleware(Keys(api_keys, admin_keys))])
    for method, path in PATHS:
        app.router.add_route(method, path, ok)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    out = {}
    try:
        async with aiohttp.ClientSession() as client:
            for method, path in PATHS:
                async with client.request(method, f"http://127.0.0.1:{port}{path}", headers=headers) as resp:
                    out[path] = resp.status
                    if resp.status == 401:
                        error = (await resp.json())["error"]
                        assert error["type"] == "authentication_error" and error["code"] == "invalid_api_key"
                        assert resp.headers["WWW-Authenticate"] == "Bearer"
    finally:
        await runner.cleanup()
    return out


def test_no_keys_means_open():
    assert set(asyncio.run(statuses((), (), {})).values()) == {200}


def test_admin_key_alone_guards_only_admin():
    anonymous = asyncio.run(statuses((), ("root",), {}))
    assert anonymous["/v1/completions"] == 200 and anonymous["/v1/models/load"] == 401


def test_inference_key_and_admin_key_are_separate():
    keys = (("user-1", "user-2"), ("root",))
    anonymous = asyncio.run(statuses(*keys, {}))
    assert {p for p, s in anonymous.items() if s == 200} == {"/health", "/v1/status", "/metrics"}
    user = asyncio.run(statuses(*keys, {"Authorization": "Bearer user-2"}))
    assert user["/v1/completions"] == user["/v1/chat/completions"] == user["/v1/models"] == 200
    assert user["/v1/models/load"] == user["/v1/config/reload"] == user["/v1/engines/vllm/logs"] == 401
    admin = asyncio.run(statuses(*keys, {"X-API-Key": "root"}))
    assert admin["/v1/models/load"] == admin["/v1/engines/vllm/logs"] == admin["/v1/completions"] == 200
    wrong = asyncio.run(statuses(*keys, {"Authorization": "Bearer nope"}))
    assert wrong["/v1/completions"] == wrong["/v1/models/load"] == 401


def test_without_an_admin_key_the_api_key_guards_admin_too():
    result = asyncio.run(statuses(("k",), (), {"Authorization": "Bearer k"}))
    assert set(result.values()) == {200}
    assert asyncio.run(statuses(("k",), (), {"Authorization": "Bearer wrong"}))["/v1/models/load"] == 401
