"""Hostile input on the real router: each case gets the right status and an OpenAI-shaped error from the router
itself, and afterwards the router still serves and both engines keep their process and model. (Malformed JSON,
bodies over the limit, `../` and absolute model paths, NUL in a path and a symlink out of the roots are in
test_router_api.py; path confinement details in tests/unit/test_model_paths.py.)"""

from __future__ import annotations

import http.client
import json
import select
import shutil
import socket
import time

import psutil
import pytest

from router.errors import ROUTER_ERROR_HEADER


@pytest.fixture
def untouched(stack):
    """The case must leave both engines as they were (same process, same model) and the router serving."""
    before = {engine: stack.wait_loaded(engine) for engine in ("vllm", "llamacpp")}
    yield
    after = stack.status()
    for engine, state in before.items():
        assert (after[engine]["status"], after[engine]["pid"], after[engine]["model"]) == \
            ("loaded", state["pid"], state["model"]), after[engine]
    status, body = stack.api("POST", "/v1/completions", {"engine": "llamacpp", "prompt": "Hi", "max_tokens": 2})
    assert status == 200 and body["choices"], body


def assert_router_error(status: int, headers, body: bytes, want_status: int, want_code: str) -> None:
    assert status == want_status, body[:300]
    assert headers.get(ROUTER_ERROR_HEADER) == "1", "the error must be the router's own"
    assert headers.get("Content-Type", "").startswith("application/json")
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"] and error["code"] == want_code


def exchange(stack, method: str, path: str, headers: list[tuple[str, str]], body: bytes = b""):
    """One request with exactly these headers (duplicates kept, nothing added but Host)."""
    connection = http.client.HTTPConnection("127.0.0.1", stack.router_port, timeout=60)
    connection.putrequest(method, path, skip_accept_encoding=True)
    for name, value in headers:
        connection.putheader(name, value)
    connection.endheaders(body)
    response = connection.getresponse()
    try:
        return response.status, response.headers, response.read()
    finally:
        connection.close()


BIG = 2**40
BODY_CASES = {
    "invalid UTF-8": (b'{"engine": "llamacpp", "prompt": "\xff\xfe\xfd"}', 400, "invalid_json"),
    "raw NUL byte in a string": (b'{"engine": "llamacpp", "prompt": "a\x00b"}', 400, "invalid_json"),
    "NUL byte before the JSON": (b'\x00{"engine": "llamacpp", "prompt": "a"}', 400, "invalid_json"),
    "objects nested 100k deep": (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, 400, "invalid_json"),
    "deep nesting inside a field": (b'{"engine": "llamacpp", "prompt": "x", "logit_bias": ' + b"[" * 200_000
                                    + b"]" * 200_000 + b"}", 400, "invalid_json"),
    "negative max_tokens (llama-server: unbounded)": ({"engine": "llamacpp", "prompt": "x", "max_tokens": -1}, 400,
                                                      "out_of_range"),
    "zero max_tokens": ({"engine": "llamacpp", "prompt": "x", "max_tokens": 0}, 400, "out_of_range"),
    "absurd max_tokens (llama-server wraps it)": ({"engine": "llamacpp", "prompt": "x", "max_tokens": BIG}, 400,
                                                  "out_of_range"),
    "absurd max_tokens on vLLM": ({"engine": "vllm", "prompt": "x", "max_tokens": BIG}, 400, "out_of_range"),
    "negative max_completion_tokens": ({"engine": "vllm", "messages": [], "max_completion_tokens": -5}, 400,
                                       "out_of_range"),
    "fractional max_tokens": ({"engine": "vllm", "prompt": "x", "max_tokens": 1.5}, 400, "invalid_type"),
    "negative n": ({"engine": "vllm", "prompt": "x", "n": -1}, 400, "out_of_range"),
    "absurd n": ({"engine": "llamacpp", "prompt": "x", "n": 10**9}, 400, "out_of_range"),
}


@pytest.mark.parametrize("case", BODY_CASES)
def test_hostile_inference_bodies(stack, untouched, case):
    body, status, code = BODY_CASES[case]
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    got = exchange(stack, "POST", "/v1/completions", [("Content-Type", "application/json"),
                                                      ("Content-Length", str(len(data)))], data)
    assert_router_error(*got, status, code)


LOAD_CASES = {
    "negative ctx_size": ({"model_path": "tiny-llama-a-gguf", "ctx_size": -1}, 400, "invalid_option"),
    "absurd ctx_size": ({"model_path": "tiny-llama-a-gguf", "ctx_size": 10**12}, 400, "invalid_option"),
    "fractional ctx_size": ({"model_path": "tiny-llama-a-gguf", "ctx_size": 2048.5}, 400, "invalid_option"),
    "zero parallel": ({"model_path": "tiny-llama-a-gguf", "parallel": 0}, 400, "invalid_option"),
    "negative max_model_len": ({"model_path": "tiny-llama-a", "max_model_len": -5}, 400, "invalid_option"),
    "percent-encoded dots (a literal name)": ({"model_path": "%2e%2e/%2e%2e/etc/passwd", "engine": "llamacpp"}, 404,
                                              "model_not_found"),
    "encoded slashes (a literal name)": ({"model_path": "..%2f..%2fetc%2fpasswd"}, 404, "model_not_found"),
    "dots through a root": ({"model_path": "models/../../../../etc/passwd"}, 400, "path_not_allowed"),
    "a process's secrets": ({"model_path": "/proc/self/environ", "engine": "llamacpp"}, 400, "path_not_allowed"),
    "newline and a flag": ({"model_path": "tiny-llama-a.gguf\n--host 0.0.0.0", "engine": "llamacpp"}, 404,
                           "model_not_found"),
    "a flag as the path": ({"model_path": "--help", "engine": "llamacpp"}, 404, "model_not_found"),
    "a flag with its value": ({"model_path": "-m /etc/passwd"}, 404, "model_not_found"),
    "an option smuggled as a field": ({"model_path": "tiny-llama-a-gguf", "--host": "0.0.0.0"}, 400,
                                      "unknown_field"),
}


@pytest.mark.parametrize("case", LOAD_CASES)
def test_hostile_load_requests(stack, untouched, case):
    body, status, code = LOAD_CASES[case]
    data = json.dumps(body).encode()
    got = exchange(stack, "POST", "/v1/models/load", [("Content-Type", "application/json"),
                                                      ("Content-Length", str(len(data)))], data)
    assert_router_error(*got, status, code)


URL_CASES = {
    "encoded dots out of /static": ("/static/%2e%2e/%2e%2e/pyproject.toml", 404, "unknown_asset"),
    "encoded slashes out of /static": ("/static/..%2f..%2fconfig%2fmodels.yaml", 404, "unknown_asset"),
    "encoded dots as an engine": ("/v1/engines/%2e%2e/logs", 404, "unknown_engine"),
    "a path as an engine": ("/v1/engines/..%2f..%2fetc/logs", 404, "unknown_engine"),
    "negative log lines": ("/v1/engines/llamacpp/logs?lines=-1", 400, "invalid_type"),
    "absurd log lines": ("/v1/engines/llamacpp/logs?lines=" + "9" * 40, 400, "out_of_range"),
}


@pytest.mark.parametrize("case", URL_CASES)
def test_hostile_urls(stack, untouched, case):
    path, status, code = URL_CASES[case]
    got = exchange(stack, "GET", path, [])
    assert_router_error(*got, status, code)


JSON = ("Content-Type", "application/json")
HEADER_CASES = {
    "two different Content-Lengths": ([JSON, ("Content-Length", "2"), ("Content-Length", "3")], b"{}"),
    "two Content-Types": ([JSON, ("Content-Type", "text/plain"), ("Content-Length", "2")], b"{}"),
    "Content-Length with chunked (smuggling)": ([JSON, ("Content-Length", "5"), ("Transfer-Encoding", "chunked")],
                                                b"0\r\n\r\n"),
    "negative Content-Length": ([JSON, ("Content-Length", "-1")], b""),
    "a 20 KB header": ([JSON, ("X-Padding", "a" * 20_000), ("Content-Length", "2")], b"{}"),
    "a thousand headers": ([JSON, *((f"X-H{i}", "v" * 50) for i in range(1000)), ("Content-Length", "2")], b"{}"),
}


@pytest.mark.parametrize("case", HEADER_CASES)
def test_malformed_http_is_answered_as_json(stack, untouched, case):
    """aiohttp's own parser rejects these before any handler runs; the answer still has the router's shape."""
    headers, body = HEADER_CASES[case]
    assert_router_error(*exchange(stack, "POST", "/v1/completions", headers, body), 400, "malformed_http")


def test_oversized_request_line_is_answered_as_json(stack, untouched):
    assert_router_error(*exchange(stack, "GET", "/health?" + "a" * 20_000, []), 400, "malformed_http")


def test_a_repeated_ordinary_header_is_harmless(stack, untouched):
    status, _, body = exchange(stack, "GET", "/health", [("X-Same", "1"), ("X-Same", "2")])
    assert status == 200 and json.loads(body)["status"] == "ok"


def trickle(stack, head: bytes, body: bytes, interval: float = 0.25):
    """Send the headers, then the body one byte per `interval` until the router answers. Returns the answer
    (status, headers, body) and how many body bytes had been sent by then."""
    with socket.create_connection(("127.0.0.1", stack.router_port), timeout=60) as sock:
        sock.sendall(head)
        sent = 0
        while sent < len(body) and not select.select([sock], [], [], interval)[0]:
            sock.send(body[sent:sent + 1])
            sent += 1
        response = http.client.HTTPResponse(sock)
        response.begin()
        return (response.status, response.headers, response.read()), sent


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_trickled_byte_by_byte_gets_408_before_it_ends(stack, untouched, chunked):
    """The test stack's body_read_timeout_seconds is 5; trickling this body would take about 30 s."""
    payload = json.dumps({"engine": "llamacpp", "prompt": "x" * 80}).encode()
    if chunked:  # one byte per chunk
        head = b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" \
               b"Transfer-Encoding: chunked\r\n\r\n"
        body = b"".join(b"1\r\n" + payload[i:i + 1] + b"\r\n" for i in range(len(payload))) + b"0\r\n\r\n"
    else:
        head = b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" \
               b"Content-Length: %d\r\n\r\n" % len(payload)
        body = payload
    started = time.monotonic()
    answer, sent = trickle(stack, head, body)
    print(f"\n408 after {time.monotonic() - started:.1f} s, {sent} of {len(body)} bytes sent")
    assert sent < len(body), "the router waited for the whole trickled body"
    assert_router_error(*answer, 408, "body_read_timeout")


def test_a_lying_content_length_gets_408_not_a_hang(stack, untouched):
    data = b'{"engine": "llamacpp", "prompt": "x"}'
    got = exchange(stack, "POST", "/v1/completions", [JSON, ("Content-Length", "99999")], data)
    assert_router_error(*got, 408, "body_read_timeout")


def test_a_model_file_named_like_flags_stays_one_argument(stack, restore_llamacpp):
    """A file under the roots whose name starts with dashes and holds a newline: the engine gets it as the value
    of -m and --alias (argv is a list, never a shell string), serves it, and no flag takes effect."""
    name = "--port=1\n--host 0.0.0.0.gguf"
    path = stack.home / "scratch" / name  # a copy, not a symlink: a link would resolve to its target's name
    shutil.copyfile(stack.home / "models" / "tiny-llama-b.gguf", path)
    status, body = stack.api("POST", "/v1/models/load", {"engine": "llamacpp", "model_path": name})
    assert status == 200, body
    served = name.removesuffix(".gguf")
    assert body["model"] == served
    argv = psutil.Process(body["pid"]).cmdline()
    assert argv[argv.index("--alias") + 1] == served
    assert argv[argv.index("-m") + 1] == str(path.resolve())
    assert argv[argv.index("--port") + 1] == str(stack.engine_ports["llamacpp"])
    assert argv.count("--port") == 1 and argv.count("--host") == 1 and "0.0.0.0" not in argv
    status, answer = stack.api("POST", "/v1/completions", {"engine": "llamacpp", "prompt": "Hi", "max_tokens": 2})
    assert status == 200 and answer["model"] == served, answer
