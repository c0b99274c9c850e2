"""Optional API keys, over real HTTP: inference and admin keys are separate, open routes stay open, a route that
declares no audience is admin-only, and a refusal is the usual OpenAI-shaped error."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest
from aiohttp import web

from router.app import openai_errors
from router.auth import Audience, Keys, audience, auth_middleware, route_audience

UNDECLARED = "/v1/models/pin"  # a new route whose author forgot @audience
ROUTES = [("GET", "/health", "open"), ("GET", "/v1/status", "open"), ("GET", "/metrics", "open"),
          ("POST", "/v1/completions", "inference"), ("POST", "/v1/chat/completions", "inference"),
          ("GET", "/v1/models", "inference"), ("POST", "/v1/models/load", "admin"),
          ("POST", "/v1/config/reload", "admin"), ("GET", "/v1/engines/vllm/logs", "admin"),
          ("POST", UNDECLARED, None)]


def stub(declared: str | None):
    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})
    return audience(declared)(ok) if declared else ok


async def answers(api_keys: tuple, admin_keys: tuple, requests: list[tuple[str, str, dict]]) -> list:
    """(status, error or None) for each (method, path, headers), against stubs with ROUTES' audiences."""
    app = web.Application(middlewares=[openai_errors, auth_middleware(Keys(api_keys, admin_keys))])
    for method, path, declared in ROUTES:
        app.router.add_route(method, path, stub(declared))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    out = []
    try:
        async with aiohttp.ClientSession() as client:
            for method, path, headers in requests:
                async with client.request(method, f"http://127.0.0.1:{port}{path}", headers=headers) as resp:
                    error = (await resp.json()).get("error")
                    if resp.status == 401:
                        assert error["type"] == "authentication_error" and error["code"] == "invalid_api_key"
                        assert resp.headers["WWW-Authenticate"] == "Bearer"
                    out.append((resp.status, error))
    finally:
        await runner.cleanup()
    return out


def statuses(api_keys: tuple, admin_keys: tuple, headers: dict) -> dict[str, int]:
    """Each route's status for a request with these headers."""
    requests = [(method, path, headers) for method, path, _ in ROUTES]
    results = asyncio.run(answers(api_keys, admin_keys, requests))
    return {path: status for (_, path, _), (status, _) in zip(requests, results)}


def test_no_keys_means_open():
    assert set(statuses((), (), {}).values()) == {200}


def test_admin_key_alone_guards_only_admin():
    anonymous = statuses((), ("root",), {})
    assert anonymous["/v1/completions"] == 200 and anonymous["/v1/models/load"] == 401


def test_inference_key_and_admin_key_are_separate():
    keys = (("user-1", "user-2"), ("root",))
    anonymous = statuses(*keys, {})
    assert {p for p, s in anonymous.items() if s == 200} == {"/health", "/v1/status", "/metrics"}
    user = statuses(*keys, {"Authorization": "Bearer user-2"})
    assert user["/v1/completions"] == user["/v1/chat/completions"] == user["/v1/models"] == 200
    assert user["/v1/models/load"] == user["/v1/config/reload"] == user["/v1/engines/vllm/logs"] == 401
    admin = statuses(*keys, {"X-API-Key": "root"})
    assert admin["/v1/models/load"] == admin["/v1/engines/vllm/logs"] == admin["/v1/completions"] == 200
    wrong = statuses(*keys, {"Authorization": "Bearer nope"})
    assert wrong["/v1/completions"] == wrong["/v1/models/load"] == 401


def test_without_an_admin_key_the_api_key_guards_admin_too():
    assert set(statuses(("k",), (), {"Authorization": "Bearer k"}).values()) == {200}
    assert statuses(("k",), (), {"Authorization": "Bearer wrong"})["/v1/models/load"] == 401


def test_a_route_that_declares_no_audience_is_admin_only():
    keys = (("user",), ("root",))
    assert statuses(*keys, {})[UNDECLARED] == 401
    assert statuses(*keys, {"Authorization": "Bearer user"})[UNDECLARED] == 401
    assert statuses(*keys, {"Authorization": "Bearer root"})[UNDECLARED] == 200
    assert statuses((), ("root",), {})[UNDECLARED] == 401  # an admin key alone leaves inference open, not this


def test_an_undeclared_audience_is_logged_once_as_a_bug(caplog):
    forgotten = stub(None)
    with caplog.at_level(logging.ERROR, logger="router.auth"):
        assert route_audience(forgotten) is route_audience(forgotten) is Audience.ADMIN
    assert [r.levelname for r in caplog.records] == ["ERROR"] and "declares no @audience" in caplog.text


def test_requests_that_match_no_route_get_aiohttps_answer_once_past_the_api_key():
    unmatched = [("GET", "/v1/nope"), ("GET", "/v1/completions"), ("DELETE", "/v1/models/load")]
    anonymous = asyncio.run(answers(("user",), ("root",), [(m, p, {}) for m, p in unmatched]))
    assert [status for status, _ in anonymous] == [401] * 3
    assert "needs an API key (ULLM_API_KEY)" in anonymous[0][1]["message"]
    user = asyncio.run(answers(("user",), ("root",), [(m, p, {"X-API-Key": "user"}) for m, p in unmatched]))
    assert [(status, error["code"]) for status, error in user] == [
        (404, "unknown_route"), (405, "method_not_allowed"), (405, "method_not_allowed")]
    no_keys = asyncio.run(answers((), (), [(m, p, {}) for m, p in unmatched]))
    assert [status for status, _ in no_keys] == [404, 405, 405]


def test_a_misspelt_audience_fails_at_import():
    with pytest.raises(ValueError):
        audience("admins")
