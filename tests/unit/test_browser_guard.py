"""The browser rules (router/browser_guard.py, router/requests.require_json) over real HTTP, one rule per test:
cross-site requests refused (403), foreign Host names refused while the API has no key (421), JSON-only POST
bodies (415), CORS for router.allowed_origins, and the config in force at each request."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from router.app import openai_errors
from router.auth import Keys, audience, auth_middleware
from router.browser_guard import add_cors_headers, browser_guard, host_name, same_origin, trusted_host
from router.config import ConfigError, parse_config
from router.requests import json_bodies
from router.state import CONFIG, LiveConfig

ROUTES = [("POST", "/v1/models/load", "admin"), ("POST", "/v1/models/unload", "admin"),
          ("POST", "/v1/config/reload", "admin"), ("POST", "/v1/completions", "inference"),
          ("GET", "/v1/status", "open"), ("GET", "/v1/models", "inference")]
APP_ORIGIN = "https://app.example.org"


def config(**router):
    lines = "".join(f"  {key}: {value}\n" for key, value in router.items())
    return parse_config(f"router:\n  host: 127.0.0.1\n{lines}engines: {{}}\n")


async def call(requests: list[dict], keys: Keys = Keys(), live=None) -> list[tuple[int, dict, str]]:
    """Each request (method, path, headers, data) against an app with the router's middlewares in its order."""
    def ok(declared: str):
        async def answer(request: web.Request) -> web.Response:
            return web.json_response({"ok": True})
        return audience(declared)(answer)

    app = web.Application(middlewares=[openai_errors, browser_guard(keys), json_bodies, auth_middleware(keys)])
    app[CONFIG] = live or LiveConfig(config(allowed_origins=f"[{APP_ORIGIN}]", allowed_hosts="[router]"),
                                     Path("models.yaml"))
    app.on_response_prepare.append(add_cors_headers)
    for method, path, declared in ROUTES:
        app.router.add_route(method, path, ok(declared))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    out = []
    try:
        async with aiohttp.ClientSession(auto_decompress=False) as client:
            for r in requests:
                headers = {k: v.replace("PORT", str(port)) for k, v in r.get("headers", {}).items()}
                async with client.request(r.get("method", "POST"), f"http://127.0.0.1:{port}{r['path']}",
                                          headers=headers, data=r.get("data"),
                                          skip_auto_headers=["Content-Type"]) as resp:
                    body = await resp.json(content_type=None) if resp.status != 204 else {}
                    out.append((resp.status, body, dict(resp.headers)))
    finally:
        await runner.cleanup()
    return out


def statuses(*requests: dict, **kwargs) -> list[int]:
    return [status for status, *_ in asyncio.run(call(list(requests), **kwargs))]


JSON = {"Content-Type": "application/json"}
BODY = b'{"engine": "llamacpp"}'


def test_a_cross_site_page_cannot_post_to_any_route():
    for method, path, _ in ROUTES:
        if method != "POST":
            continue
        results = asyncio.run(call([
            {"path": path, "data": BODY, "headers": {**JSON, "Origin": "http://evil.example"}},
            {"path": path, "data": BODY, "headers": {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}},
            {"path": path, "data": BODY, "headers": {**JSON, "Sec-Fetch-Site": "cross-site"}},
            {"path": path, "data": BODY, "headers": {**JSON, "Sec-Fetch-Site": "same-site"}},  # another port
            {"path": path, "data": BODY, "headers": {**JSON, "Origin": "http://127.0.0.1:1"}},
            {"path": path, "data": BODY, "headers": {**JSON, "Origin": "null"}},  # sandboxed frame, file: page
            {"path": path, "headers": {"Origin": "http://evil.example"}},  # no body: still refused
        ]))
        for status, body, _ in results:
            assert status == 403, (path, status, body)
            assert body["error"]["type"] == "permission_error" and body["error"]["code"] == "cross_site_request"
            assert "router.allowed_origins" in body["error"]["message"]


def test_curl_sdks_and_the_routers_own_page_pass():
    assert statuses(
        {"path": "/v1/completions", "data": BODY, "headers": JSON},  # curl, SDKs: no Origin, no Sec-Fetch-Site
        {"path": "/v1/completions", "data": BODY,  # the chat UI: same origin
         "headers": {**JSON, "Origin": "http://127.0.0.1:PORT", "Sec-Fetch-Site": "same-origin"}},
        {"path": "/v1/completions", "data": BODY, "headers": {**JSON, "Sec-Fetch-Site": "none"}},  # typed by the user
        {"path": "/v1/config/reload"},  # `curl -X POST .../v1/config/reload`: no body, no Content-Type
        # a same-origin POST under the page's Referrer-Policy: no-referrer may carry a null Origin
        {"path": "/v1/completions", "data": BODY,
         "headers": {**JSON, "Origin": "null", "Sec-Fetch-Site": "same-origin"}},
    ) == [200, 200, 200, 200, 200]


def test_reading_routes_are_not_refused_for_a_foreign_origin():
    # the browser keeps the answer from the page (no CORS header), and a GET changes nothing
    results = asyncio.run(call([{"method": "GET", "path": "/v1/status", "headers": {"Origin": "http://evil.example"}}]))
    status, _, headers = results[0]
    assert status == 200 and "Access-Control-Allow-Origin" not in headers


def test_every_post_body_must_be_json():
    results = asyncio.run(call([
        {"path": "/v1/models/load", "data": BODY},  # a no-cors fetch with a Blob: no Content-Type at all
        {"path": "/v1/models/load", "data": BODY, "headers": {"Content-Type": "text/plain"}},
        {"path": "/v1/config/reload", "data": b"a=1", "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
        {"path": "/v1/completions", "data": BODY, "headers": {"Content-Type": "multipart/form-data; boundary=x"}},
    ]))
    for status, body, _ in results:
        assert status == 415 and body["error"]["code"] == "unsupported_media_type", body
    assert "absent" in results[0][1]["error"]["message"]
    assert statuses({"path": "/v1/models/load", "data": BODY,
                     "headers": {"Content-Type": "application/json; charset=utf-8"}}) == [200]


def test_a_foreign_host_name_is_refused_while_the_api_has_no_key():
    results = asyncio.run(call([{"method": method, "path": path, "data": BODY if method == "POST" else None,
                                 "headers": {**JSON, "Host": "rebound.evil.example:PORT"}}
                                for method, path, _ in ROUTES]))
    for status, body, _ in results:
        assert status == 421, body
        assert body["error"]["code"] == "host_not_allowed" and "router.allowed_hosts" in body["error"]["message"]
    trusted = ["localhost:PORT", "127.0.0.1:PORT", "127.9.8.7", "[::1]:PORT", "router:PORT", "app.localhost",
               "LOCALHOST."]
    assert statuses(*({"method": "GET", "path": "/v1/status", "headers": {"Host": h}} for h in trusted)) == [200] * 7
    # with an API key, a rebound page has no key: the key decides (401), the name does not matter
    keyed = statuses({"path": "/v1/completions", "data": BODY, "headers": {**JSON, "Host": "evil.example"}},
                     {"method": "GET", "path": "/v1/status", "headers": {"Host": "evil.example"}},
                     keys=Keys(api=("user",)))
    assert keyed == [401, 200]
    # an admin key alone leaves inference open: the Host rule still applies
    assert statuses({"method": "GET", "path": "/v1/models", "headers": {"Host": "evil.example"}},
                    keys=Keys(admin_only=("root",))) == [421]


def test_allowed_origins_get_cors_answers():
    preflight = {"method": "OPTIONS", "path": "/v1/completions",
                 "headers": {"Origin": APP_ORIGIN, "Access-Control-Request-Method": "POST",
                             "Access-Control-Request-Headers": "authorization,content-type",
                             "Access-Control-Request-Private-Network": "true"}}
    real = {"path": "/v1/completions", "data": BODY, "headers": {**JSON, "Origin": APP_ORIGIN,
                                                                 "Sec-Fetch-Site": "cross-site"}}
    foreign = {**preflight, "headers": {**preflight["headers"], "Origin": "http://evil.example"}}
    # the preflight carries no key: it is answered before the key check
    (p_status, _, p_headers), (r_status, _, r_headers), (f_status, f_body, f_headers) = asyncio.run(
        call([preflight, {**real, "headers": {**real["headers"], "Authorization": "Bearer user"}}, foreign],
             keys=Keys(api=("user",))))
    assert p_status == 204 and p_headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert "POST" in p_headers["Access-Control-Allow-Methods"]
    allowed_headers = {h.strip() for h in p_headers["Access-Control-Allow-Headers"].split(",")}
    assert {"Authorization", "Content-Type"} <= allowed_headers
    assert p_headers["Access-Control-Allow-Private-Network"] == "true" and p_headers["Vary"] == "Origin"
    assert r_status == 200 and r_headers["Access-Control-Allow-Origin"] == APP_ORIGIN
    assert f_status == 403 and f_body["error"]["code"] == "origin_not_allowed"
    assert "Access-Control-Allow-Origin" not in f_headers


def test_the_lists_in_force_are_read_at_each_request():
    live = LiveConfig(config(), Path("models.yaml"))
    request = {"path": "/v1/completions", "data": BODY, "headers": {**JSON, "Origin": APP_ORIGIN}}
    assert statuses(request, live=live) == [403]
    live.current = config(allowed_origins=f"[{APP_ORIGIN}]")  # what POST /v1/config/reload does
    assert statuses(request, live=live) == [200]


def test_host_names_and_origins():
    assert host_name("[::1]:8080") == "::1" and host_name("Router:80") == "router" and host_name("::1") == "::1"
    assert trusted_host("127.0.0.1:8080", "127.0.0.1", []) and trusted_host("[::1]", "127.0.0.1", [])
    assert trusted_host("llm.lan:8080", "llm.lan", []) and trusted_host("llm.lan", "0.0.0.0", ["llm.lan"])
    assert trusted_host("anything.example", "127.0.0.1", ["*"])
    assert not trusted_host("10.0.0.5:8080", "0.0.0.0", []) and not trusted_host("localhost.evil.example", "::", [])
    assert same_origin("http://127.0.0.1:8080", "127.0.0.1:8080") and same_origin("http://localhost", "localhost:80")
    assert same_origin("https://llm.example.org", "LLM.example.org")
    assert not same_origin("http://127.0.0.1:8081", "127.0.0.1:8080") and not same_origin("null", "127.0.0.1:8080")
    assert not same_origin("http://localhost:8080", "127.0.0.1:8080")


@pytest.mark.parametrize("origin", ["app.example.org", "https://app.example.org/", "ftp://x", "https://a/b"])
def test_an_allowed_origin_must_be_an_origin(origin):
    with pytest.raises(ConfigError, match="is not an origin"):
        parse_config(f"router:\n  allowed_origins: ['{origin}']\nengines: {{}}\n")


@pytest.mark.parametrize("host", ["http://router", "router:8080", ""])
def test_an_allowed_host_is_a_bare_name(host):
    with pytest.raises(ConfigError, match="is not a host name"):
        parse_config(f"router:\n  allowed_hosts: ['{host}']\nengines: {{}}\n")
