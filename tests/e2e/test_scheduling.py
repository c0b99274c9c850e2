"""Swap-aware scheduling against the real engines: interleaved requests for two models of one engine are
grouped by model (router.min_residency_seconds), every one is answered and none waits past the bound; a load
that every client has left is cancelled; scraping metrics never loads a model."""

from __future__ import annotations

import http.client
import json
import threading
import time

from tests.stack import wait_for

RESIDENCY = 3.0
LOAD_ALLOWANCE = 60.0  # a llama.cpp swap on a busy 2-core box takes seconds; this only bounds starvation


def test_interleaved_requests_for_two_models_are_grouped_and_none_starves(stack, restore_llamacpp):
    stack.wait_loaded("llamacpp")
    swaps_before = stack.router_metric("unified_model_swaps_total", engine="llamacpp")
    outcomes: list[tuple[str, int, float]] = []

    def client(model: str, until: float) -> None:
        while time.monotonic() < until:
            asked = time.monotonic()
            status, _ = stack.api("POST", "/v1/completions", {"model": model, "prompt": "Hi", "max_tokens": 4},
                                  timeout=300)
            outcomes.append((model, status, time.monotonic() - asked))

    with stack.router_settings(min_residency_seconds=RESIDENCY):
        started = time.monotonic()
        clients = [threading.Thread(target=client, args=(model, started + 15))
                   for model in ("tiny-llama-a-gguf", "tiny-llama-b-gguf")]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join(600)
        elapsed = time.monotonic() - started
    swaps = stack.router_metric("unified_model_swaps_total", engine="llamacpp") - swaps_before
    longest = max(seconds for _, _, seconds in outcomes)
    print(f"\n{len(outcomes)} interleaved requests in {elapsed:.0f}s: {swaps:.0f} swaps, longest wait {longest:.1f}s "
          f"(residency {RESIDENCY:g}s)")
    assert {status for _, status, _ in outcomes} == {200}, outcomes
    assert {model for model, _, _ in outcomes} == {"tiny-llama-a-gguf", "tiny-llama-b-gguf"}
    assert swaps <= elapsed / RESIDENCY + 2, swaps  # at most one swap per residency
    assert longest < RESIDENCY + LOAD_ALLOWANCE
    assert stack.router_metric("unified_swap_wait_seconds_count", engine="llamacpp") > 0


def test_a_load_every_client_hung_up_on_while_it_drained_is_cancelled_and_the_model_keeps_serving(stack):
    """A stream keeps vLLM busy, so an on-demand swap to tiny-llama-b waits in its drain; the only client that
    wanted tiny-llama-b hangs up once it hears it is waiting: the load is cancelled before it stopped anything,
    and vLLM goes on serving tiny-llama-a with the same process. (A load whose clients hang up after the old
    model was stopped runs to its end: tests/unit/test_scheduling.py.)"""
    before = stack.wait_loaded("vllm")
    result: dict = {}

    def long_stream():
        # 48 x 1,900 tokens: tens of seconds of drain on this CPU, whatever else runs on the box
        body = {"engine": "vllm", "prompt": "Hi", "max_tokens": 1900, "n": 48, "ignore_eos": True, "stream": True}
        result["status"], result["raw"] = stack.api_raw("POST", "/v1/completions", json.dumps(body).encode())
    streamer = threading.Thread(target=long_stream)
    with stack.router_settings(min_residency_seconds=0):  # the swap goes straight to its drain
        streamer.start()
        hang_up_while_it_drains(stack, before, streamer, result)


def hang_up_while_it_drains(stack, before: dict, streamer: threading.Thread, result: dict) -> None:
    try:
        wait_for(lambda: stack.status()["vllm"]["in_flight"] == 1, 30, "the stream to be in flight", 0.05)
        connection = http.client.HTTPConnection("127.0.0.1", stack.router_port, timeout=300)
        connection.request("POST", "/v1/completions", json.dumps({"model": "tiny-llama-b", "prompt": "Hi",
                                                                  "max_tokens": 4, "stream": True}),
                           {"Content-Type": "application/json"})
        response = connection.getresponse()
        note = response.readline()
        connection.close()  # the only client that wanted tiny-llama-b hangs up, as soon as it hears it waits
        left = time.monotonic()
        assert note.startswith(b": waiting for vllm to load tiny-llama-b"), note
        state = wait_for(lambda: (s := stack.status()["vllm"])["state"] == "loaded" and s, 60,
                         "the abandoned load to be cancelled")
        print(f"\nabandoned load of tiny-llama-b cancelled {time.monotonic() - left:.1f}s after its client left")
        assert state["model"] == before["model"] and state["pid"] == before["pid"]  # never stopped
        assert "cancelling the running load of tiny-llama-b" in stack.router_log()
        streamer.join(300)
        assert result["status"] == 200 and result["raw"].rstrip().endswith(b"data: [DONE]")  # not cut
    finally:
        streamer.join(300)


def test_scraping_metrics_never_wakes_or_loads_a_model(stack, restore_llamacpp):
    assert stack.api("POST", "/v1/models/unload", {"engine": "llamacpp"})[0] == 200
    for path in ("/metrics", "/metrics/engines/llamacpp", "/metrics/engines/vllm", "/v1/status", "/health"):
        assert stack.api_raw("GET", path, None)[0] == 200, path
    state = stack.status()["llamacpp"]
    assert state["state"] == "idle" and state["waiting"] == 0 and not state["process_alive"]
