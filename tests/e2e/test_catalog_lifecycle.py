"""models.yaml reload without restart, on-demand loading, draining swaps and idle unload, on real engines."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import threading
import time

import pytest
import yaml

from tests.stack import wait_for


@contextlib.contextmanager
def edited_config(stack, edit):
    """Apply `edit` to the stack's models.yaml; restore the original (and reload it) afterwards."""
    original = stack.config_path.read_text()
    config = yaml.safe_load(original)
    edit(config)
    stack.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    try:
        yield
    finally:
        stack.config_path.write_text(original)
        status, body = stack.api("POST", "/v1/config/reload")
        assert status == 200, body
        stack.wait_loaded("llamacpp")
        stack.wait_loaded("vllm")


def test_reload_restarts_only_the_engine_whose_model_changed(stack):
    pids = {name: stack.wait_loaded(name)["pid"] for name in ("vllm", "llamacpp")}

    def edit(config):
        config["models"]["tiny-llama-a-gguf"]["options"]["ctx_size"] = 1024
        config["models"]["brand-new"] = {"engine": "llamacpp", "path": "tiny-llama-b.gguf"}

    with edited_config(stack, edit):
        status, report = stack.api("POST", "/v1/config/reload")
        assert status == 200, report
        assert report["models"] == {"added": ["brand-new"], "removed": [], "changed": ["tiny-llama-a-gguf"]}
        assert report["engines"]["llamacpp"]["restarted"] is True
        assert report["engines"]["vllm"]["restarted"] is False
        after = stack.status()
        assert after["vllm"]["pid"] == pids["vllm"] and after["vllm"]["status"] == "loaded"
        assert after["llamacpp"]["pid"] != pids["llamacpp"]
        assert after["llamacpp"]["options"]["ctx_size"] == 1024
        ids = {m["id"] for m in stack.api("GET", "/v1/models")[1]["data"]}
        assert "brand-new" in ids


@pytest.mark.parametrize("text, needle", [
    ("engines: [\n", "invalid YAML"),
    (None, "line"),  # a schema error: an unknown key, reported with its position
])
def test_invalid_config_is_refused_and_the_old_one_keeps_serving(stack, text, needle):
    original = stack.config_path.read_text()
    bad = text if text is not None else original.replace("  vllm:\n", "  vllm:\n    prot: 1\n", 1)
    before = stack.status()["llamacpp"]["pid"]
    stack.config_path.write_text(bad)
    try:
        status, body = stack.api("POST", "/v1/config/reload")
    finally:
        stack.config_path.write_text(original)
    assert status == 400 and body["error"]["code"] == "invalid_config", body
    assert needle in body["error"]["message"] and body["error"]["problems"]
    if text is None:
        assert any("engines.vllm.prot" in p for p in body["error"]["problems"])
    assert stack.status()["llamacpp"]["pid"] == before
    status, done = stack.api("POST", "/v1/completions", {"model": "tiny-llama-a-gguf", "prompt": "Hi", "max_tokens": 2})
    assert status == 200, done


def test_sighup_reloads_the_config(stack):
    def edit(config):
        config["models"]["added-by-sighup"] = {"engine": "vllm", "path": "tiny-llama-b"}

    with edited_config(stack, edit):
        stack.ctl("signal", "HUP", "router")
        wait_for(lambda: "added-by-sighup" in {m["id"] for m in stack.api("GET", "/v1/models")[1]["data"]},
                 10, "the SIGHUP reload")


def complete(stack, model: str) -> tuple[int, dict]:
    return stack.api("POST", "/v1/completions", {"model": model, "prompt": "Hi", "max_tokens": 3}, timeout=300)


def test_on_demand_swap_serves_every_queued_request(stack):
    stack.wait_loaded("llamacpp")
    try:
        status, body = complete(stack, "tiny-llama-b-gguf")  # not loaded: the router swaps it in
        assert status == 200 and body["model"] == "tiny-llama-b-gguf", body
        assert stack.status()["llamacpp"]["model"] == "tiny-llama-b-gguf"
        with concurrent.futures.ThreadPoolExecutor(8) as pool:  # 8 requests racing one swap back
            answers = list(pool.map(lambda _: complete(stack, "tiny-llama-a-gguf"), range(8)))
        assert [status for status, _ in answers] == [200] * 8, answers
        assert {body["model"] for _, body in answers} == {"tiny-llama-a-gguf"}
    finally:
        stack.api("POST", "/v1/models/load", {"engine": "llamacpp", "model_path": "tiny-llama-a-gguf"})


def test_a_swap_waits_for_the_stream_in_flight(stack):
    stack.wait_loaded("vllm")
    result: dict = {}

    def long_stream():
        body = {"engine": "vllm", "prompt": "Hi", "max_tokens": 1500, "n": 6, "ignore_eos": True, "stream": True}
        status, raw = stack.api_raw("POST", "/v1/completions", json.dumps(body).encode())
        result.update(status=status, raw=raw, ended=time.monotonic())

    streamer = threading.Thread(target=long_stream)
    streamer.start()
    wait_for(lambda: stack.status()["vllm"]["in_flight"] == 1, 10, "the stream to be in flight", 0.05)
    try:
        status, body = stack.api("POST", "/v1/models/load", {"engine": "vllm", "model_path": "tiny-llama-b"})
        loaded = time.monotonic()
        assert status == 200, body
        streamer.join(60)
        assert result["status"] == 200
        assert result["raw"].rstrip().endswith(b"data: [DONE]"), result["raw"][-300:]  # finished, not cut
        assert result["ended"] <= loaded  # the swap began only after the stream ended
    finally:
        streamer.join(60)
        stack.api("POST", "/v1/models/load", {"engine": "vllm", "model_path": "tiny-llama-a"})


def test_idle_engine_unloads_and_comes_back_on_the_next_request(stack):
    def edit(config):
        config["engines"]["llamacpp"]["idle_unload_seconds"] = 2

    stack.wait_loaded("llamacpp")
    with edited_config(stack, edit):
        status, report = stack.api("POST", "/v1/config/reload")
        assert status == 200 and report["engines"]["llamacpp"]["restarted"] is False  # not a launch setting
        state = wait_for(lambda: (s := stack.status()["llamacpp"])["state"] == "idle" and s, 15, "idle unload")
        assert state["unload_reason"] == "idle for 2 s" and state["unloaded_at"] and not state["process_alive"]
        stack.ctl("restart", "router")  # what an idle unload took away is remembered across a router restart
        wait_for(lambda: stack._router_up(), 30, "the router to restart")
        after = stack.status()["llamacpp"]
        assert after["status"] == "idle" and after["unload_reason"] == "idle for 2 s", after
        assert after["unloaded_at"] == state["unloaded_at"]
        status, body = stack.api("POST", "/v1/completions", {"engine": "llamacpp", "prompt": "Hi", "max_tokens": 2})
        assert status == 200 and body["model"] == "tiny-llama-a-gguf", body


def test_upstream_read_timeout_comes_from_the_config_at_once(stack):
    def edit(config):
        config["router"]["upstream_read_timeout_seconds"] = 0.05

    stack.wait_loaded("vllm")
    slow = {"engine": "vllm", "prompt": "Hi", "max_tokens": 200, "ignore_eos": True}  # ~1 s on the CPU build
    with edited_config(stack, edit):
        status, report = stack.api("POST", "/v1/config/reload")
        assert status == 200 and report["engines"]["vllm"]["restarted"] is False
        status, body = stack.api("POST", "/v1/completions", slow)
        assert status == 504 and body["error"]["code"] == "timeout", body
    status, body = stack.api("POST", "/v1/completions", slow)  # the old timeout is back, and vLLM still serves
    assert status == 200 and body["usage"]["completion_tokens"] == 200, body
