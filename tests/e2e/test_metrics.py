"""The router's metrics agree with what was actually sent and answered, on the real engines."""

from __future__ import annotations

import json
import os
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.stack import wait_for


def scrape(stack, path: str = "/metrics") -> dict[tuple, float]:
    text = urllib.request.urlopen(stack.base_url + path, timeout=10).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_request_and_token_counters_match_the_traffic(stack):
    stack.wait_loaded("llamacpp")
    labels = {"engine": "llamacpp", "model": "tiny-llama-a-gguf"}
    before = scrape(stack)
    base = {"engine": "llamacpp", "prompt": "Once upon a time", "ignore_eos": True}
    generated = 0
    for _ in range(4):
        status, body = stack.api("POST", "/v1/completions", {**base, "max_tokens": 7})
        assert status == 200
        generated += body["usage"]["completion_tokens"]
    for asked in (False, True, False):
        request = {**base, "max_tokens": 5, "stream": True}
        if asked:
            request["stream_options"] = {"include_usage": True}
        status, raw = stack.api_raw("POST", "/v1/completions", json.dumps(request).encode())
        assert status == 200
        assert (b'"usage"' in raw) == asked  # usage the router asked for on its own is not passed on
        generated += 5
    after = scrape(stack)
    delta = lambda name, **extra: value(after, name, **labels, **extra) - value(before, name, **labels, **extra)  # noqa: E731
    assert delta("unified_requests_total", endpoint="completions", status="200") == 7
    assert delta("unified_generated_tokens_total") == generated == 4 * 7 + 3 * 5
    assert delta("unified_request_duration_seconds_count", endpoint="completions") == 7
    assert delta("unified_time_to_first_token_seconds_count", endpoint="completions") == 7
    assert delta("unified_generation_tokens_per_second_count") == 7


def test_errors_are_counted_with_their_status(stack):
    before = scrape(stack)
    status, _ = stack.api("POST", "/v1/completions", {"engine": "nope", "prompt": "x"})
    assert status == 400
    after = scrape(stack)
    key = dict(engine="none", model="none", endpoint="completions", status="400")
    assert value(after, "unified_requests_total", **key) - value(before, "unified_requests_total", **key) == 1


def test_engine_state_load_time_and_process_gauges(stack):
    stack.wait_loaded("llamacpp")
    samples = scrape(stack)
    assert value(samples, "unified_engine_state", engine="llamacpp", state="loaded") == 1
    assert value(samples, "unified_engine_state", engine="llamacpp", state="error") == 0
    assert sum(v for (name, labels), v in samples.items()
               if name == "unified_model_load_duration_seconds_count" and ("engine", "llamacpp") in labels) >= 1
    rss = wait_for(lambda: value(scrape(stack), "unified_engine_memory_rss_bytes", engine="vllm"), 15,
                   "a process sample of vLLM")
    assert rss > 50 * 2**20  # a real vLLM process tree, not a placeholder
    # sampled every few seconds: the engine may have restarted since the last sample
    wait_for(lambda: value(scrape(stack), "unified_engine_threads", engine="llamacpp") >= 1, 15,
             "a process sample of llama-server")


def test_router_process_gauges_are_the_routers_own(stack):
    router_pid = int(stack.ctl("pid", "router").strip())
    samples = scrape(stack)
    rss = value(samples, "unified_router_memory_rss_bytes")
    assert 10 * 2**20 < rss < 2**30, rss  # a Python process, not a placeholder nor an engine
    assert value(samples, "unified_router_open_fds") == pytest.approx(len(os.listdir(f"/proc/{router_pid}/fd")), abs=8)
    assert value(samples, "unified_router_asyncio_tasks") >= 2  # this scrape's handler and the monitor at least


def test_engine_metrics_are_reexported_with_engine_and_model_labels(stack):
    llama = scrape(stack, "/metrics/engines/llamacpp")
    assert value(llama, "llamacpp:tokens_predicted_total", engine="llamacpp", model="tiny-llama-a-gguf") > 0
    vllm = scrape(stack, "/metrics/engines/vllm")
    running = [labels for (name, labels), _ in vllm.items() if name == "vllm:num_requests_running"]
    assert running and all(("engine", "vllm") in labels and ("model", "tiny-llama-a") in labels for labels in running)
    status, body = stack.api("GET", "/metrics/engines/nope")
    assert status == 404 and body["error"]["code"] == "unknown_engine"


def test_concurrent_streams_to_llamacpp_never_hit_a_closed_connection(stack):
    """llama-server closes a connection after each stream while announcing keep-alive; the router must not pool
    it, or the next request on it fails unsent and has to be resent (16 streams x 4 rounds did 4-5 resends)."""
    stack.wait_loaded("llamacpp")
    before = scrape(stack)
    body = json.dumps({"engine": "llamacpp", "prompt": "Hi", "max_tokens": 8, "stream": True}).encode()

    def client() -> list[int]:
        return [stack.api_raw("POST", "/v1/completions", body)[0] for _ in range(4)]

    with ThreadPoolExecutor(16) as pool:
        statuses = [s for result in pool.map(lambda _: client(), range(16)) for s in result]
    assert statuses == [200] * 64
    after = scrape(stack)
    assert value(after, "unified_upstream_resends_total", engine="llamacpp") == \
        value(before, "unified_upstream_resends_total", engine="llamacpp")
