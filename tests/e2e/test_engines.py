"""Both real engines under the real supervisord: they generate, come back after restarts and crashes with the
same model, and report bad input with the engine's own log lines."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import time

import pytest
import yaml

from tests.stack import http_json, wait_for


def generate_direct(stack, engine: str, model: str) -> dict:
    """Talk to the engine's own internal port, bypassing the router: proves a real engine is serving."""
    url = f"http://127.0.0.1:{stack.engine_ports[engine]}/v1/completions"
    status, body = http_json("POST", url, {"model": model, "prompt": "Once upon a time", "max_tokens": 8,
                                           "temperature": 0})
    assert status == 200, body
    return body


@pytest.mark.parametrize("engine, model", [("llamacpp", "tiny-llama-a-gguf"), ("vllm", "tiny-llama-a")])
def test_engine_generates_on_its_internal_port(stack, engine, model):
    body = generate_direct(stack, engine, model)
    assert isinstance(body["choices"][0]["text"], str)
    assert body["usage"]["completion_tokens"] > 0


def test_processes_are_listed_by_supervisorctl(stack):
    out = stack.ctl("status")
    for program in ("router", "vllm", "llamacpp"):
        assert any(line.startswith(program) and "RUNNING" in line for line in out.splitlines()), out


def wait_back(stack, engine: str, old_pid: int, timeout: float) -> dict:
    def back():
        state = stack.status()[engine]
        return state if state["status"] == "loaded" and state["pid"] not in (None, old_pid) else None
    return wait_for(back, timeout, f"{engine} to come back with a new process")


def test_supervisorctl_restart_vllm_keeps_the_model(stack):
    with stack.crashes_on_purpose():  # killed on purpose: not a crash loop
        before = stack.wait_loaded("vllm")
        started = time.monotonic()
        stack.ctl("restart", "vllm")
        after = wait_back(stack, "vllm", before["pid"], 300)
        print(f"\nvllm back after supervisorctl restart in {time.monotonic() - started:.1f}s")
        assert after["model"] == before["model"] == "tiny-llama-a"
        generate_direct(stack, "vllm", "tiny-llama-a")


def test_killed_llama_server_is_restarted_with_the_same_model(stack):
    with stack.crashes_on_purpose():  # killed on purpose: not a crash loop
        before = stack.wait_loaded("llamacpp")
        exits = stack.router_metric("unified_supervisor_events_total", engine="llamacpp", event="PROCESS_STATE_EXITED")
        started = time.monotonic()
        os.kill(before["pid"], signal.SIGKILL)
        after = wait_back(stack, "llamacpp", before["pid"], 60)
        print(f"\nllama-server back after SIGKILL in {time.monotonic() - started:.1f}s")
        assert after["model"] == before["model"] == "tiny-llama-a-gguf"
        generate_direct(stack, "llamacpp", "tiny-llama-a-gguf")
        # supervisord told the router of the crash itself (its event listener), not only the router's polling
        assert stack.router_metric("unified_supervisor_events_total", engine="llamacpp",
                                   event="PROCESS_STATE_EXITED") == exits + 1


def test_corrupt_gguf_fails_with_llama_server_log_lines(stack, restore_llamacpp):
    corrupt = stack.home / "scratch" / "corrupt.gguf"
    corrupt.write_bytes(b"GGUF" + os.urandom(4096))
    started = time.monotonic()
    status, body = stack.api("POST", "/v1/models/load", {"engine": "llamacpp", "model_path": str(corrupt)},
                             timeout=120)
    assert status == 500, body
    message = body["error"]["message"]
    assert body["error"]["type"] == "model_load_error"
    assert "last log lines" in message and "gguf" in message.lower(), message
    assert time.monotonic() - started < 60
    state = stack.status()["llamacpp"]
    assert state["status"] == "error" and state["last_error"] == message
    assert not state["process_alive"]


def test_missing_model_path_is_refused_clearly(stack):
    for engine, name in (("llamacpp", "no-such-model.gguf"), ("vllm", "no-such-model")):
        status, body = stack.api("POST", "/v1/models/load", {"engine": engine, "model_path": name})
        assert status == 404, body
        assert body["error"]["code"] == "model_not_found" and "no-such-model" in body["error"]["message"]
    assert stack.status()["vllm"]["status"] == "loaded"  # a refused load touches nothing


def test_missing_llama_server_binary_quotes_the_launcher(stack, restore_llamacpp):
    original = stack.config_path.read_text()
    config = yaml.safe_load(original)
    config["engines"]["llamacpp"]["binary"] = "/nonexistent/llama-server"
    stack.config_path.write_text(yaml.safe_dump(config))
    try:  # a new binary is a new launch plan: the reload restarts llama.cpp with it, and the launcher refuses
        status, report = stack.api("POST", "/v1/config/reload", timeout=120)
    finally:
        stack.config_path.write_text(original)
        stack.api("POST", "/v1/config/reload")
    assert status == 200 and report["engines"]["llamacpp"]["restarted"] is False, report
    assert "llama-server binary not found at /nonexistent/llama-server" in report["engines"]["llamacpp"]["error"]
    assert stack.status()["llamacpp"]["status"] == "error"


def test_status_follows_supervisorctl_stop_and_start_within_a_second(stack):
    stack.wait_loaded("llamacpp")
    stack.ctl("stop", "llamacpp")
    stopped = time.monotonic()
    wait_for(lambda: stack.status()["llamacpp"]["status"] == "idle", 1.0, "status to show the stop", 0.05)
    print(f"\nstatus showed the stop after {time.monotonic() - stopped:.2f}s")
    state = stack.status()["llamacpp"]
    assert not state["process_alive"] and state["last_error"] is None  # stopped on purpose is not an error
    stack.ctl("start", "llamacpp")
    assert stack.wait_loaded("llamacpp", timeout=60)["model"] == "tiny-llama-a-gguf"


def test_concurrent_loads_of_the_same_model_share_one_start(stack):
    before = stack.wait_loaded("llamacpp")["pid"]
    body = {"engine": "llamacpp", "model_path": "tiny-llama-b-gguf"}
    try:
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(lambda _: stack.api("POST", "/v1/models/load", body), range(3)))
        assert all(status == 200 for status, _ in answers), answers
        pids = {body["pid"] for _, body in answers}
        assert len(pids) == 1 and before not in pids  # one new process: the others joined or found it loaded
        assert stack.status()["llamacpp"]["pid"] in pids
        status, again = stack.api("POST", "/v1/models/load", body)  # already loaded: no restart
        assert status == 200 and again["load_seconds"] == 0 and again["pid"] in pids
    finally:
        stack.api("POST", "/v1/models/load", {"engine": "llamacpp", "model_path": "tiny-llama-a-gguf"})
