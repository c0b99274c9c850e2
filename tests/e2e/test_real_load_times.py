"""Real load times on the real stack (issue 22): an on-demand vLLM load that outlasts a request's wait, through
the openai SDK and its default retries; two engines loading at once under a memory reserve that fits one; a
broken catalog entry asked for on demand. Each test prints what it measured."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import psutil
import yaml

from engines.memory import GiB
from tests.stack import steady

WAIT = 15  # request_wait_seconds for these tests: far shorter than a vLLM load here (60-90 s)
SLOW_BOX = 600  # load_timeout_seconds for these tests: a vLLM load took over 240 s while other stacks ran


def loads_of(stack, engine: str, model: str) -> float:
    return stack.router_metric("unified_model_swaps_total", engine=engine, model=model)


def went_idle(stack, engine: str) -> float:
    return stack.router_metric("unified_engine_transitions_total", engine=engine, source="loading", target="idle")


def sdk_completion(stack, model: str) -> tuple[str, float, int]:
    """One completion through the openai SDK with its default retries (2); (outcome, seconds, HTTP attempts)."""
    client = openai.OpenAI(base_url=stack.base_url + "/v1", api_key="unused", timeout=300)
    attempts = {"n": 0}

    def count(request):
        attempts["n"] += 1
    client._client.event_hooks["request"].append(count)
    asked = time.monotonic()
    try:
        done = client.completions.create(model=model, prompt="Hi", max_tokens=3)
        outcome = f"answered by {done.model}"
    except openai.APIStatusError as exc:
        outcome = f"{exc.status_code} {exc.body.get('code') if isinstance(exc.body, dict) else exc.body}"
    return outcome, time.monotonic() - asked, attempts["n"]


def test_an_on_demand_vllm_load_longer_than_the_wait_runs_once_and_ends_loaded(stack):
    before = stack.wait_loaded("vllm")
    loads_b, idle = loads_of(stack, "vllm", "tiny-llama-b"), went_idle(stack, "vllm")
    try:
        with stack.router_settings(request_wait_seconds=WAIT, load_timeout_seconds=SLOW_BOX):
            outcome, seconds, attempts = sdk_completion(stack, "tiny-llama-b")
            print(f"\nSDK asked for tiny-llama-b (a vLLM load, request_wait_seconds {WAIT}): {outcome} after "
                  f"{seconds:.1f} s and {attempts} HTTP request(s)")
            after = stack.wait_loaded("vllm", timeout=SLOW_BOX)
            assert after["model"] == "tiny-llama-b", after  # the load ran to its end: not idle, not abandoned
            assert loads_of(stack, "vllm", "tiny-llama-b") == loads_b + 1, "the retries started the load again"
            assert went_idle(stack, "vllm") == idle, "vLLM went idle on the way: the old model was simply lost"
            assert attempts >= 2 or outcome.startswith("answered"), outcome  # it outlasted the first wait
            # the previous model was not lost either: a request for it brings it back the same way
            outcome, seconds, attempts = sdk_completion(stack, before["model"])
            print(f"SDK asked for {before['model']} again: {outcome} after {seconds:.1f} s and {attempts} "
                  f"HTTP request(s)")
            back = stack.wait_loaded("vllm", timeout=SLOW_BOX)
            assert back["model"] == before["model"] and went_idle(stack, "vllm") == idle
    finally:
        stack.api("POST", "/v1/models/load", {"engine": "vllm", "model_path": before["model"]})


def test_two_engines_loading_at_once_under_a_reserve_that_fits_one_are_never_both_started(stack):
    """vLLM (estimate 3 GiB on the CPU build) and llama.cpp with a 0.5 GiB KV cache are asked to load at the same
    moment, with a reserve that leaves room for either but not both: one is refused with the numbers, or it waits
    until the other is loaded and its real size known. Never both loading at once. (The margins are 0.25 GiB of
    a shared box's MemAvailable: the test prints how far it moved.)"""
    vllm_before = stack.wait_loaded("vllm")
    stack.wait_loaded("llamacpp")
    big_ctx = 1 << 20  # the most llama.cpp takes, x 512 B per cell of the tiny GGUF (2 layers, 1 KV head, 128, f16)
    # vLLM's swap frees what its current model holds: with that, 3 GiB fits and 0.5 GiB fits, both do not
    # what the router counts as freed: the anonymous part, as its sampler sees the process now
    freed = steady(lambda: stack.status()["vllm"]["memory_anon_bytes"], "vLLM's memory sample")
    available = [psutil.virtual_memory().available]
    reserve = (available[0] + freed - 3.25 * GiB) / GiB
    seen: list[tuple[float, str, str]] = []
    watching = threading.Event()

    def watch():
        while not watching.is_set():
            status = stack.status()
            seen.append((time.monotonic(), status["vllm"]["state"], status["llamacpp"]["state"]))
            available.append(psutil.virtual_memory().available)
            watching.wait(0.1)  # a sample every tenth of a second until told to stop
    try:
        with stack.router_settings(memory_reserve_gib=round(reserve, 2), load_timeout_seconds=SLOW_BOX):
            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            with ThreadPoolExecutor(2) as pool:
                vllm = pool.submit(stack.api, "POST", "/v1/models/load", {"engine": "vllm", "model_path": "tiny-llama-b"})
                llama = pool.submit(stack.api, "POST", "/v1/models/load",
                                    {"engine": "llamacpp", "model_path": "tiny-llama-a-gguf", "ctx_size": big_ctx})
                answers = {"vllm": vllm.result(), "llamacpp": llama.result()}
            watching.set()
            watcher.join(10)
        both = [t for t, v, l in seen if v == "loading" and l == "loading"]
        outcome = {name: (status, body.get("error", {}).get("code") or body.get("load_seconds"))
                   for name, (status, body) in answers.items()}
        print(f"\nreserve {reserve:.2f} GiB, both asked at once: {outcome}; both loading at once in "
              f"{len(both)} of {len(seen)} status polls; MemAvailable {min(available) / GiB:.2f}-"
              f"{max(available) / GiB:.2f} GiB meanwhile (at the start {available[0] / GiB:.2f})")
        assert not both, "both engines were loading at the same time"
        refused = [name for name, (status, _) in answers.items() if status == 409]
        for name in refused:
            body = answers[name][1]
            assert body["error"]["code"] == "insufficient_memory" and "needs about" in body["error"]["message"]
        assert len(refused) < 2, outcome  # at least one of them fits
        if not refused:
            assert "finish loading before its memory check" in stack.router_log()  # serialised
    finally:
        stack.api("POST", "/v1/models/load", {"engine": "llamacpp", "model_path": "tiny-llama-a-gguf"})
        stack.api("POST", "/v1/models/load", {"engine": "vllm", "model_path": vllm_before["model"]})


def test_a_broken_catalog_entry_asked_for_on_demand_brings_the_working_model_back(stack):
    before = stack.wait_loaded("llamacpp")
    broken = stack.home / "scratch" / "broken.gguf"
    broken.write_bytes(b"GGUF" + bytes(range(256)) * 16)  # a GGUF header, then garbage: llama-server fails
    original = stack.config_path.read_text()
    config = yaml.safe_load(original)
    config["models"]["broken-gguf"] = {"engine": "llamacpp", "path": str(broken)}
    stack.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    failed = stack.router_metric("unified_on_demand_failures_total", engine="llamacpp", outcome="failed")
    refused = stack.router_metric("unified_on_demand_failures_total", engine="llamacpp", outcome="refused")
    try:
        assert stack.api("POST", "/v1/config/reload")[0] == 200
        outcome, seconds, attempts = sdk_completion(stack, "broken-gguf")  # the SDK retries the 500 twice
        print(f"\nSDK asked for a broken catalog entry: {outcome} after {seconds:.1f} s, {attempts} HTTP "
              f"request(s)")
        assert outcome.startswith(("500", "409")), outcome
        state = stack.wait_loaded("llamacpp", timeout=120)
        assert state["model"] == before["model"], state  # the working model is back
        assert "the on-demand load of broken-gguf failed; bringing back" in stack.router_log()
        status, body = stack.api("POST", "/v1/completions", {"engine": "llamacpp", "prompt": "Hi", "max_tokens": 2})
        assert status == 200 and body["model"] == before["model"], body  # and serving
        assert stack.router_metric("unified_on_demand_failures_total", engine="llamacpp",
                                   outcome="failed") == failed + 1  # tried once, whatever the retries
        assert stack.router_metric("unified_on_demand_failures_total", engine="llamacpp",
                                   outcome="refused") >= refused + attempts - 1
        status, body = stack.api("POST", "/v1/completions", {"model": "broken-gguf", "prompt": "Hi", "max_tokens": 2})
        assert status == 409 and body["error"]["code"] == "model_load_failed", body  # remembered
    finally:
        stack.config_path.write_text(original)
        stack.api("POST", "/v1/config/reload")
        stack.api("POST", "/v1/models/load", {"engine": "llamacpp", "model_path": before["model"]})
