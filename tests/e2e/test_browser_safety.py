"""Safe in a browser and on a shared machine, against the session's real stack: a page from another local origin
(a second HTTP server on another loopback port, in real Chromium) cannot load, unload, reload or run a
completion, by a `no-cors` fetch with a Blob body, a plain cross-origin fetch, a JSON fetch (preflighted) or a
form post, and both engines keep their process and model; an origin in router.allowed_origins can call the API;
a foreign Host (DNS rebinding) gets 421; the engines run without the secrets of the environment that started
supervisord, with telemetry off and the hub offline."""

from __future__ import annotations

import http.client
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from engines.environment import QUIET
from tests.stack import DECOY_SECRETS, engine_environ, free_port
from tests.browser import chromium

TARGETS = {  # what each attempt would do if it got through
    "load": ("/v1/models/load", {"engine": "llamacpp", "model_path": "tiny-llama-b-gguf"}),
    "unload": ("/v1/models/unload", {"engine": "vllm"}),
    "reload": ("/v1/config/reload", {}),
    "completion": ("/v1/completions", {"engine": "llamacpp", "prompt": "Hi", "max_tokens": 2}),
}
# Runs in the other origin's page: every way a page can send a POST to the router without the user's help.
ATTACK = """async ({base, targets}) => {
  const results = {};
  const outcome = (promise) => promise.then((r) => r.type === "opaque" ? "opaque" : r.status, (e) => "rejected");
  for (const [name, [path, body]] of Object.entries(targets)) {
    const url = base + path, json = JSON.stringify(body);
    results[name] = {
      // no Content-Type (a Blob without a type), no preflight; the page cannot read the answer, but needs not
      noCors: await outcome(fetch(url, {method: "POST", mode: "no-cors", body: new Blob([json])})),
      // a plain cross-origin fetch: text/plain, no preflight; sent with the page's Origin
      plain: await outcome(fetch(url, {method: "POST", body: json})),
      // JSON: the browser asks first (OPTIONS), and sends nothing when the router does not allow the origin
      preflighted: await outcome(fetch(url, {method: "POST", body: json,
                                             headers: {"Content-Type": "application/json"}})),
    };
    // a form post into a hidden frame, its text/plain body shaped like JSON
    await new Promise((resolve) => {
      const frame = document.createElement("iframe");
      frame.name = "sink-" + name;
      // the first load may be the empty frame's own (about:blank, same origin: its document is readable); the
      // router's answer is on the router's origin, whose document the page cannot read
      frame.onload = () => { if (frame.contentDocument === null) resolve(); };
      document.body.append(frame);
      const form = document.createElement("form");
      Object.assign(form, {method: "POST", action: url, target: frame.name, enctype: "text/plain"});
      const input = document.createElement("input");
      input.name = json.slice(0, -1) + ', "pad": "';
      input.value = '"}';
      form.append(input);
      document.body.append(form);
      form.submit();
    });
  }
  return results;
}"""
CALL = """async ({base}) => {
  const status = await fetch(base + "/v1/status");
  const done = await fetch(base + "/v1/completions", {method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({engine: "llamacpp", prompt: "Hi", max_tokens: 2, temperature: 0})});
  return {status: status.status, engines: Object.keys(await status.json()), completion: done.status,
          choices: (await done.json()).choices.length};
}"""


class Page(BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"<!doctype html><title>another site</title><p>nothing to see</p>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def other_site():
    """A second local web server: the origin of a page the user happens to have open."""
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


def engines_now(stack) -> dict:
    status = stack.status()
    return {name: (e["pid"], e["model"], e["status"]) for name, e in status.items()}


@pytest.mark.parametrize("page_host", ["localhost", "127.0.0.1"])  # cross-site, and same-site (another port)
def test_a_page_on_another_origin_changes_nothing(stack, browser, other_site, page_host):
    before = engines_now(stack)
    # the engines the session loads at start (the Transformers engine has no default model: it stays idle)
    assert before["vllm"][2] == before["llamacpp"][2] == "loaded", before
    completions = stack.router_metric("unified_requests_total", endpoint="completions")
    reloads = stack.router_log().count("config reloaded")
    context = browser.new_context()
    page = context.new_page()
    posts = []
    context.on("response", lambda r: posts.append((r.url, r.status)) if r.request.method == "POST" else None)
    page.goto(f"http://{page_host}:{other_site}/")
    results = page.evaluate(ATTACK, {"base": stack.base_url, "targets": TARGETS})
    # the form posts' answers, as the hidden frames show them (the page itself cannot read them)
    framed = {frame.url: frame.content() for frame in page.frames if frame.url.startswith(stack.base_url)}
    context.close()

    for name, outcome in results.items():
        # no-cors answers are opaque to the page, the others fail: the page learns nothing either way
        assert outcome == {"noCors": "opaque", "plain": "rejected", "preflighted": "rejected"}, (name, outcome)
    # what the router answered the fetches that reached it (the preflighted ones never left the browser)
    fetched = [(url, status) for url, status in posts if url.startswith(stack.base_url)]
    assert sorted(url for url, _ in fetched) == sorted([stack.base_url + path for path, _ in TARGETS.values()] * 2)
    assert {status for _, status in fetched} == {403}, fetched
    assert sorted(framed) == sorted(stack.base_url + path for path, _ in TARGETS.values()), framed
    assert all("cross_site_request" in html for html in framed.values()), framed
    assert engines_now(stack) == before  # same processes, same models
    assert stack.router_metric("unified_requests_total", endpoint="completions") == completions
    assert stack.router_log().count("config reloaded") == reloads


def test_an_allowed_origin_can_call_the_api(stack, browser, other_site):
    origin = f"http://localhost:{other_site}"
    with stack.router_settings(allowed_origins=[origin]):
        context = browser.new_context()
        page = context.new_page()
        page.goto(origin + "/")
        answer = page.evaluate(CALL, {"base": stack.base_url})
        context.close()
    assert answer == {"status": 200, "engines": list(stack.status()), "completion": 200, "choices": 1}, answer
    assert answer["engines"] == ["vllm", "llamacpp", "transformers"]  # the session's stack: the three engines


def request_with_host(stack, method: str, path: str, host: str, body: dict | None = None) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", stack.router_port, timeout=60)
    try:
        data = json.dumps(body).encode() if body is not None else None
        connection.request(method, path, body=data, headers={"Host": host, "Content-Type": "application/json"})
        response = connection.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw.startswith(b"{") else {}
    finally:
        connection.close()


def test_a_rebound_host_name_is_refused(stack):
    before = engines_now(stack)
    port = stack.router_port
    for method, path, body in [("GET", "/v1/status", None), ("GET", "/v1/engines/llamacpp/logs", None),
                               ("POST", "/v1/models/unload", {"engine": "llamacpp"}),
                               ("POST", "/v1/completions", TARGETS["completion"][1]), ("GET", "/metrics", None)]:
        status, answer = request_with_host(stack, method, path, f"attacker.example:{port}", body)
        assert status == 421 and answer["error"]["code"] == "host_not_allowed", (path, status, answer)
    assert engines_now(stack) == before
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
        assert request_with_host(stack, "GET", "/v1/status", host)[0] == 200, host
    # compose's Prometheus scrapes the service name (router:8080): docker/config/models.yaml lists it
    assert request_with_host(stack, "GET", "/metrics", f"router:{port}")[0] == 421
    with stack.router_settings(allowed_hosts=["router"]):
        assert request_with_host(stack, "GET", "/metrics", f"router:{port}")[0] == 200
        assert request_with_host(stack, "GET", "/v1/status", "router")[0] == 200


def test_engines_run_without_secrets_offline_and_without_telemetry(stack):
    for engine in ("vllm", "llamacpp"):
        environ = engine_environ(stack.engine_pid(engine))
        assert not set(DECOY_SECRETS) & set(environ), (engine, sorted(environ))
        assert QUIET.items() <= environ.items(), engine
    for log in (stack.home / "run" / "logs").iterdir():
        assert DECOY_SECRETS["HF_TOKEN"] not in log.read_text(errors="replace"), log.name
