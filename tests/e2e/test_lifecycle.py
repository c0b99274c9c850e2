"""The engine lifecycle on the real stack: a router restart mid-load, crash restarts that ignore an unreloaded
models.yaml, a reload that moves a port, a request for the outgoing model during a swap, unloads that drain,
and clients that leave a non-streamed request."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request

import openai
import psutil
import yaml

from tests.stack import free_port, http_json, wait_for


def router_restarted(stack) -> None:
    stack.ctl("restart", "router")
    wait_for(stack._router_up, 60, "the router to come back")


def load_in_background(stack, engine: str, model: str) -> threading.Thread:
    """POST a load that may outlive its HTTP request (the router restarts under it)."""
    def post():
        with contextlib.suppress(OSError):
            stack.api("POST", "/v1/models/load", {"engine": engine, "model_path": model})
    thread = threading.Thread(target=post, daemon=True)
    thread.start()
    return thread


def test_a_router_restart_mid_load_comes_back_with_the_requested_model(stack):
    before = stack.wait_loaded("vllm")
    try:
        load_in_background(stack, "vllm", "tiny-llama-b")
        # the new process is started (its plan written first): the load is now waiting for vLLM to be ready
        state = wait_for(lambda: (s := stack.status()["vllm"])["state"] == "loading" and s["pid"]
                         and s["pid"] != before["pid"] and s, 120, "vLLM to start with tiny-llama-b", 0.1)
        assert state["model"] == "tiny-llama-b"
        router_restarted(stack)
        after = stack.wait_loaded("vllm", timeout=300)
        assert after["model"] == "tiny-llama-b" and after["pid"] == state["pid"]  # adopted, not started again
        text = stack.api("POST", "/v1/completions", {"engine": "vllm", "prompt": "Hi", "max_tokens": 2})
        assert text[0] == 200 and text[1]["model"] == "tiny-llama-b", text
    finally:
        stack.api("POST", "/v1/models/load", {"engine": "vllm", "model_path": "tiny-llama-a"})


def cmdline(pid: int) -> list[str]:
    return psutil.Process(pid).cmdline()


def test_a_crash_restart_runs_what_the_router_decided_not_an_unreloaded_models_yaml(stack):
    with stack.crashes_on_purpose():  # killed on purpose: not a crash loop
        before = stack.wait_loaded("llamacpp")
        original = stack.config_path.read_text()
        config = yaml.safe_load(original)
        config["engines"]["llamacpp"]["extra_args"] = ["--threads", "1"]
        config["models"]["tiny-llama-a-gguf"]["options"]["ctx_size"] = 1024
        try:
            stack.config_path.write_text(yaml.safe_dump(config))  # edited, not reloaded
            os.kill(before["pid"], signal.SIGKILL)
            edited = wait_for(lambda: (s := stack.status()["llamacpp"])["status"] == "loaded"
                              and s["pid"] != before["pid"] and s, 60, "llama-server to come back")
            argv = cmdline(edited["pid"])
            assert "--threads" not in argv and argv[argv.index("-c") + 1] == "2048", argv
            assert edited["port"] == before["port"] and edited["options"]["ctx_size"] == 2048

            stack.config_path.write_text(original[: len(original) // 2])  # half-written: not even valid YAML
            os.kill(edited["pid"], signal.SIGKILL)
            again = wait_for(lambda: (s := stack.status()["llamacpp"])["status"] == "loaded"
                             and s["pid"] != edited["pid"] and s, 60, "llama-server to come back again")
            assert cmdline(again["pid"]) == argv
        finally:
            stack.config_path.write_text(original)
        status, body = stack.api("POST", "/v1/completions", {"engine": "llamacpp", "prompt": "Hi", "max_tokens": 2})
        assert status == 200, body


def test_a_reload_that_moves_a_port_restarts_the_engine_there(stack):
    before = stack.wait_loaded("llamacpp")
    original = stack.config_path.read_text()
    config = yaml.safe_load(original)
    new_port = free_port()
    config["engines"]["llamacpp"]["port"] = new_port
    try:
        stack.config_path.write_text(yaml.safe_dump(config))
        status, report = stack.api("POST", "/v1/config/reload")
        assert status == 200 and report["engines"]["llamacpp"]["restarted"] is True, report
        after = stack.status()["llamacpp"]
        assert after["port"] == new_port and after["pid"] != before["pid"]
        assert f"--port {new_port}" in " ".join(cmdline(after["pid"]))
        status, body = stack.api("POST", "/v1/completions", {"engine": "llamacpp", "prompt": "Hi", "max_tokens": 2})
        assert status == 200, body
    finally:
        stack.config_path.write_text(original)
        status, report = stack.api("POST", "/v1/config/reload")
        assert status == 200 and stack.status()["llamacpp"]["port"] == before["port"], report


def test_a_request_for_the_outgoing_model_during_a_swap_is_answered(stack):
    """...and streaming requests that wait hear why, in SSE comments that the openai SDK skips."""
    # the request for the outgoing model waits for two vLLM loads (the swap and the swap back): longer than the
    # shipped request_wait_seconds on this box
    with stack.router_settings(request_wait_seconds=600):
        stack.wait_loaded("vllm")
        sdk = openai.OpenAI(base_url=stack.base_url + "/v1", api_key="unused", timeout=600, max_retries=0)
        swap = load_in_background(stack, "vllm", "tiny-llama-b")
        try:
            wait_for(lambda: stack.status()["vllm"]["state"] == "loading", 30, "the swap to begin", 0.05)
            with concurrent.futures.ThreadPoolExecutor(3) as pool:
                for_b = pool.submit(stream, stack, {"model": "tiny-llama-b", "prompt": "Hi", "max_tokens": 3,
                                                    "stream": True})
                refused = pool.submit(stream, stack, {"model": "tiny-llama-b", "prompt": "Hi", "max_tokens": 100000,
                                                      "stream": True})
                for_a = pool.submit(lambda: list(sdk.completions.create(model="tiny-llama-a", prompt="Hi", max_tokens=3,
                                                                        stream=True)))
                status, body = stack.api("POST", "/v1/completions", {"model": "tiny-llama-a", "prompt": "Hi",
                                                                     "max_tokens": 3})
                assert status == 200 and body["model"] == "tiny-llama-a", body  # waited for B, then the swap back
                (status_b, raw_b), (status_refused, raw_refused), chunks = for_b.result(), refused.result(), for_a.result()
            assert status_b == 200 and raw_b.startswith(b": waiting for vllm to load tiny-llama-b"), raw_b[:300]
            assert raw_b.rstrip().endswith(b"data: [DONE]") and b'"model": "tiny-llama-b"' in raw_b.replace(b'":"', b'": "')
            # the engine refused after the stream had begun: its error comes as the stream's last event
            assert status_refused == 200 and raw_refused.startswith(b": waiting for vllm"), raw_refused[:300]
            assert json.loads(raw_refused.rstrip().rsplit(b"\n", 1)[-1][len(b"data: "):])["error"]["message"]
            assert chunks and {chunk.model for chunk in chunks} == {"tiny-llama-a"}  # the SDK parsed it cleanly
            swap.join(60)
            after = stack.status()["vllm"]
            assert after["model"] == "tiny-llama-a" and after["status"] == "loaded"
        finally:
            swap.join(300)
            stack.api("POST", "/v1/models/load", {"engine": "vllm", "model_path": "tiny-llama-a"})


def stream(stack, body: dict) -> tuple[int, bytes]:
    return stack.api_raw("POST", "/v1/completions", json.dumps(body).encode(), timeout=300)


def streamed_watched(stack, body: dict, generating: threading.Event) -> tuple[int, bytes]:
    """A streamed completion whose first token sets `generating` (the engine has it in its batch)."""
    request = urllib.request.Request(stack.base_url + "/v1/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as resp:
        first = resp.read1()
        generating.set()
        return resp.status, first + resp.read()


def test_unload_under_16_streams_drains_them_and_answers_new_requests_with_503(stack):
    stack.wait_loaded("vllm")
    body = {"engine": "vllm", "prompt": "Hi", "max_tokens": 2000, "ignore_eos": True, "stream": True}  # seconds each
    try:
        with concurrent.futures.ThreadPoolExecutor(17) as pool:
            generating = [threading.Event() for _ in range(16)]
            streams = [pool.submit(streamed_watched, stack, body, began) for began in generating]

            def under_load():  # seen from the clients, without asking a router busy relaying 16 streams
                if (ended := [s for s in streams if s.done()]) and len(ended) > 8:
                    raise AssertionError(f"{len(ended)} of the 16 streams ended before the last one began: "
                                         f"{[s.exception() or s.result()[0] for s in ended]}")
                return all(began.is_set() for began in generating)
            # a quiet box streams 16 x 2,000 tiny-model tokens in a few seconds, and a status request can wait
            # behind them for a second: the clients' first tokens say when all 16 are generating
            wait_for(under_load, 60, "the 16 streams' first tokens", 0.01)
            unloading = pool.submit(stack.api, "POST", "/v1/models/unload", {"engine": "vllm"})
            state = wait_for(lambda: (s := stack.status()["vllm"])["state"] != "loaded" and s, 10,
                             "the state to leave loaded", 0.02)
            print(f"\nunloading with {state['in_flight']} of 16 streams in flight")
            assert state["state"] == "stopping" and state["status"] == "idle", state
            status, refused = stack.api("POST", "/v1/completions", {"engine": "vllm", "prompt": "Hi", "max_tokens": 2})
            assert status == 503 and refused["error"]["code"] == "engine_idle", refused
            answers = [s.result() for s in streams]
            assert unloading.result()[0] == 200
        for status, raw in answers:
            assert status == 200 and raw.rstrip().endswith(b"data: [DONE]"), raw[-300:]  # finished, none cut
            assert b'"error"' not in raw
        assert stack.status()["vllm"]["state"] == "idle"
    finally:
        status, body = stack.api("POST", "/v1/models/load", {"engine": "vllm", "model_path": "tiny-llama-a"})
        assert status == 200, body


def test_a_client_leaving_a_non_streamed_request_frees_the_engine(stack):
    stack.wait_loaded("vllm")
    # Several seconds of generation even on a quiet machine: a non-streamed n=16 request made 9,000 tokens/s
    # on the 2-core CPU build, so 16 x 1,900 tokens were half done before a client that left after 2 s
    asked = 48 * 1900
    before = stack.engine_metric("vllm", "vllm:generation_tokens_total")
    body = json.dumps({"engine": "vllm", "prompt": "Hi", "max_tokens": 1900, "n": 48, "ignore_eos": True}).encode()
    request = urllib.request.Request(stack.base_url + "/v1/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    with contextlib.suppress(TimeoutError, urllib.error.URLError):
        urllib.request.urlopen(request, timeout=1)  # the client gives up
    left = time.monotonic()
    wait_for(lambda: stack.status()["vllm"]["in_flight"] == 0, 3, "the router to drop the request")
    # vLLM's API server answers /metrics late while it generates: running == 0 is read once it has stopped
    wait_for(lambda: stack.engine_metric("vllm", "vllm:num_requests_running") == 0, 60, "vLLM to stop generating")
    generated = stack.engine_metric("vllm", "vllm:generation_tokens_total") - before
    print(f"\nvLLM stopped {time.monotonic() - left:.2f}s after the client left, after {generated:.0f} of "
          f"{asked} tokens")
    assert 0 < generated < asked / 2, generated  # it was generating, and was cut off
    status, done = stack.api("POST", "/v1/completions", {"engine": "vllm", "prompt": "Hi", "max_tokens": 2})
    assert status == 200, done


def test_status_has_the_original_shape(stack):
    status, body = stack.api("GET", "/v1/status")
    # the engines are the only top-level keys: the original two, and the third one (transformers) beside them
    assert status == 200 and set(body) == {"vllm", "llamacpp", "transformers"}
    for engine in body.values():
        assert engine["status"] in ("idle", "loading", "loaded", "error")
        assert {"model", "process_alive", "state", "pid", "port", "last_error"} <= set(engine)
    assert http_json("GET", stack.base_url + "/health")[1]["status"] == "ok"
