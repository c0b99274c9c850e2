"""Several models resident at once, on a real stack of its own (llama.cpp only, `max_instances: 2`, the shipped
router settings): two real models in two llama-server instances answer alternating requests from several clients
with no restart and no swap; a third model evicts the least recently used instance, never one streaming, never a
pinned one, and, with room for three instances but a reserve that leaves room for two, the least recently used
one; a crash of one instance leaves the other serving."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import subprocess
import time

import pytest
import yaml
from playwright.sync_api import expect

from engines.memory import GiB
from tests.browser import chromium
from tests.stack import PROJECT, Stack, make_stack, steady, wait_for

pytestmark = pytest.mark.e2e

REAL = (PROJECT / "models" / "smollm2-135m-instruct-q4_1.gguf").exists() and (
    PROJECT / "models" / "gemma-3-270m-q4_k_m.gguf").exists()
# two resident models (the real small ones where setup built them) and a third that has to take a place
A, B = ("smollm2-135m-instruct-gguf", "gemma-3-270m-gguf") if REAL else ("tiny-llama-a-gguf", "tiny-llama-b-gguf")
C = "tiny-llama-a-gguf" if REAL else "smollm2-135m-instruct-bf16-gguf"


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Stack:
    def edit(config: dict) -> None:
        del config["engines"]["vllm"]
        config["engines"]["llamacpp"].update(default_model=A, max_instances=2)
    stack = make_stack(tmp_path_factory.mktemp("resident"), edit)
    stack.start()
    try:
        stack.wait_loaded("llamacpp", timeout=120)
        print(f"\nresident models: {A}, {B}; the third: {C}" + ("" if REAL else " (the tiny ones: no real models)"))
        yield stack
    finally:
        stack.stop()
    illegal = [line for line in stack.router_log().splitlines() if "illegal transition" in line]
    assert not illegal, illegal


def complete(stack: Stack, model: str, max_tokens: int = 8, engine: str = "llamacpp") -> dict:
    status, body = stack.api("POST", "/v1/completions", {"engine": engine, "model": model, "prompt": "The",
                                                         "max_tokens": max_tokens, "temperature": 0})
    assert status == 200, body
    assert body["model"] == model
    return body


def instances(stack: Stack, engine: str = "llamacpp") -> dict[str, dict]:
    """Each instance of the engine by the model it holds (`None`: free)."""
    return {i["model"]: i for i in stack.status()[engine]["instances"]}


def swaps(stack: Stack) -> float:
    return stack.router_metric("unified_model_swaps_total")


def settle(stack: Stack, *models: str, engine: str = "llamacpp") -> dict[str, dict]:
    """Wait until each of `models` is loaded on an instance of `engine` (and its memory sampled); the instances
    by model."""
    return wait_for(lambda: (found := instances(stack, engine)) and all(
        m in found and found[m]["state"] == "loaded" and found[m]["memory_rss_bytes"] for m in models) and found,
        120, f"{models} to be resident on {engine}")


def only(stack: Stack, *models: str) -> dict[str, dict]:
    """Make exactly `models` resident: unload any other, then ask for each (into the free instances)."""
    for model in instances(stack):
        if model is not None and model not in models:
            assert stack.api("POST", "/v1/models/unload", {"engine": "llamacpp", "model": model})[0] == 200
    for model in models:
        complete(stack, model)
    return settle(stack, *models)


def test_two_models_resident_answer_alternating_clients_without_a_restart(stack):
    complete(stack, A)
    complete(stack, B)  # a request for B loads it beside A
    before = settle(stack, A, B)
    assert {before[A]["name"], before[B]["name"]} == {"llamacpp", "llamacpp-1"}
    programs = stack.ctl("status")  # each instance its own supervisord program
    assert any(line.split()[:2] == ["llamacpp-extra:llamacpp-1", "RUNNING"] for line in programs.splitlines()), programs
    swapped = swaps(stack)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda n: complete(stack, A if n % 2 else B)["model"], range(24)))
    after = settle(stack, A, B)
    assert answers.count(A) == answers.count(B) == 12
    assert {m: after[m]["pid"] for m in (A, B)} == {m: before[m]["pid"] for m in (A, B)}, "an instance restarted"
    assert swaps(stack) == swapped, "a model was swapped while both were resident"
    print("\n" + "\n".join(line for line in programs.splitlines() if line.startswith("llamacpp")))


def test_a_third_model_evicts_the_least_recently_used_instance_that_is_not_streaming(stack):
    only(stack, A, B)
    body = {"engine": "llamacpp", "model": A, "prompt": "Once", "max_tokens": 1500, "ignore_eos": True,
            "stream": True}
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        streaming = pool.submit(stack.api_raw, "POST", "/v1/completions", json.dumps(body).encode(), "application/json",
                                300)
        wait_for(lambda: instances(stack)[A]["in_flight"] == 1, 60, f"{A}'s stream to start")
        complete(stack, B)  # B is now the most recently used, A the least: but A is streaming
        a_before, b_before = instances(stack)[A], instances(stack)[B]
        complete(stack, C)
        after = settle(stack, A, C)
        assert B not in after and after[C]["name"] == b_before["name"], "C did not take B's place"
        assert after[A]["pid"] == a_before["pid"] and after[A]["in_flight"] == 1, "the streaming instance was touched"
        status, raw = streaming.result()
    assert status == 200 and raw.rstrip().endswith(b"data: [DONE]"), raw[-300:]
    assert b'"error"' not in raw


def test_a_pinned_model_is_never_evicted_not_even_after_a_router_restart(stack):
    only(stack, A, B)
    status, pinned = stack.api("POST", "/v1/models/pin", {"model": A, "pinned": True})
    assert status == 200 and pinned["pinned"] is True, pinned
    complete(stack, B)  # A is the least recently used
    a_pid = instances(stack)[A]["pid"]
    try:
        complete(stack, C)
        after = settle(stack, A, C)
        assert B not in after and after[A]["pid"] == a_pid and after[A]["pinned"] is True
        stack.ctl("restart", "router")  # the next router adopts the instances and keeps the pin
        wait_for(stack._router_up, 60, "the router to come back")
        wait_for(lambda: (instances(stack).get(A) or {}).get("state") == "loaded", 60, f"{A} to be adopted")
        assert instances(stack)[A]["pinned"] is True and instances(stack)[A]["pid"] == a_pid
    finally:
        assert stack.api("POST", "/v1/models/pin", {"model": A, "pinned": False})[0] == 200


def test_with_room_for_two_a_free_third_instance_is_not_used_and_the_least_recently_used_is_evicted(stack):
    only(stack, A, B)
    # A with a long context: its KV cache is anonymous memory, what the check counts as freed when A goes; it sets
    # the margin of the reserve below
    status, loaded = stack.api("POST", "/v1/models/load", {"engine": "llamacpp", "model_path": A, "ctx_size": 32768})
    assert status == 200, loaded
    config = stack.config_path.read_text()
    three = yaml.safe_load(config)
    three["engines"]["llamacpp"]["max_instances"] = 3
    stack.config_path.write_text(yaml.safe_dump(three, sort_keys=False))
    try:
        assert stack.api("POST", "/v1/config/reload")[0] == 200
        complete(stack, C)  # with the shipped reserve it fits beside A and B: a third instance
        third = settle(stack, A, B, C)
        estimate = stack.status()["llamacpp"]["memory_estimate"]["total_bytes"]  # C's: the most recently used
        assert len({third[m]["name"] for m in (A, B, C)}) == 3
        assert stack.api("POST", "/v1/models/unload", {"engine": "llamacpp", "model": C})[0] == 200
        complete(stack, B)  # A is the least recently used
        a = instances(stack)[A]
        a_anon = steady(lambda: instances(stack)[A]["memory_anon_bytes"], f"{A}'s memory sample")
        # a reserve that leaves room for C only once A's memory comes back: half of A's either way
        with open("/proc/meminfo") as meminfo:
            available = next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemAvailable"))
        reserve = (available - estimate + a_anon / 2) / GiB
        print(f"\nC needs {estimate / GiB:.3f} GiB, A gives back {a_anon / GiB:.3f} GiB when stopped, "
              f"{available / GiB:.2f} GiB available: reserve {reserve:.2f} GiB")
        with stack.router_settings(memory_reserve_gib=round(reserve, 3)):
            complete(stack, C)
            after = settle(stack, B, C)
        assert A not in after and after[C]["name"] == a["name"], f"C should have taken A's place: {after}"
        assert sum(1 for i in stack.status()["llamacpp"]["instances"] if i["model"] is None) == 1
    finally:
        stack.config_path.write_text(config)
        assert stack.api("POST", "/v1/config/reload")[0] == 200


def test_a_crash_of_one_instance_leaves_the_other_serving(stack):
    before = only(stack, A, B)
    os.kill(before[B]["pid"], signal.SIGKILL)
    started = time.monotonic()
    for _ in range(5):  # A answers while supervisord restarts B's instance
        assert complete(stack, A)["choices"][0]["text"] is not None
    after = settle(stack, A, B)
    print(f"\n{B}'s instance back after {time.monotonic() - started:.1f} s")
    assert after[B]["pid"] != before[B]["pid"] and after[B]["name"] == before[B]["name"]
    assert after[A]["pid"] == before[A]["pid"]
    complete(stack, B)


def test_the_page_lists_the_instances_and_a_resident_model_answers_without_a_load(stack):
    """The chat page with two instances: its card lists both, the picker says where each resident model is, and
    a chat with the other resident model loads nothing (no load request, no swap, no restart)."""
    held = only(stack, A, B)
    swapped = swaps(stack)
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        errors, loads = [], []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("request", lambda r: loads.append(r.url) if r.url.endswith("/v1/models/load") else None)
        page.set_default_timeout(60_000)
        page.goto(stack.base_url + "/")
        expect(page.locator(".engine-card .instances [data-instance]")).to_have_count(2)  # max_instances 2
        page.select_option("#engine", "llamacpp")
        for model in (A, B):
            expect(page.locator(f'#model option[value="{model}"]')).to_have_attribute("data-instance",
                                                                                       held[model]["name"])
        other = B if stack.status()["llamacpp"]["model"] == A else A  # the one not shown at the top level
        page.select_option("#model", other)
        if not page.evaluate("document.querySelector('#settings').open"):
            page.click("#settings > summary")
        page.fill("#max_tokens", "8")
        page.fill("#prompt", "Hi")
        page.click("#send")
        expect(page.locator("article.assistant")).to_have_attribute("data-state", "done", timeout=120_000)
    assert not errors and not loads, (errors, loads)
    after = settle(stack, A, B)
    assert swaps(stack) == swapped and {m: after[m]["pid"] for m in (A, B)} == {m: held[m]["pid"] for m in (A, B)}
    assert stack.status()["llamacpp"]["model"] == other  # the chat went to its instance: now the most recent


def test_bench_switch_reports_a_switch_between_resident_models_beside_the_restart(stack, tmp_path):
    """scripts/bench_switch.py --resident: A → B by restarting the instance (the original load), then the same
    switch with both resident, which is one request. (Last here: its direct starts unload the engine.)"""
    only(stack, A)
    run = subprocess.run(
        [str(PROJECT / ".venv" / "bin" / "python"), str(PROJECT / "scripts" / "bench_switch.py"), "--router",
         stack.base_url, "--run-dir", str(stack.home / "run"), "--engines", "llamacpp", "--to", B, "--resident",
         "--timeout", "240", "--out", str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    starts = json.loads((tmp_path / "switch.json").read_text())["llamacpp"]
    restart = [s for s in starts if s["how"].startswith("router:") and "resident" not in s["how"]]
    resident = [s for s in starts if s["how"].endswith("both resident")]
    assert len(restart) == 2 and len(resident) == 2, [s["how"] for s in starts]
    assert all(s["error"] is None and s["first_token_s"] > 0 for s in restart + resident), starts
    print("\n" + (tmp_path / "switch.md").read_text())



@pytest.fixture(scope="module")
def vllm_pair(tmp_path_factory) -> Stack:
    """vLLM alone with max_instances 2, its shipped default (SmolLM2) loaded: can this 2-core box hold two?"""
    def edit(config: dict) -> None:
        del config["engines"]["llamacpp"]
        config["engines"]["vllm"]["max_instances"] = 2
    stack = make_stack(tmp_path_factory.mktemp("vllm-pair"), edit, plumbing=False)
    stack.start()
    try:
        stack.wait_loaded("vllm", timeout=600)
        yield stack
    finally:
        stack.stop()


def test_two_vllm_instances_hold_two_models_and_alternate_without_a_restart(vllm_pair):
    first = vllm_pair.status()["vllm"]["model"]  # SmolLM2 where setup built it, else the tiny model
    second = "tiny-llama-b" if first == "tiny-llama-a" else "tiny-llama-a"
    asked = time.monotonic()
    complete(vllm_pair, second, engine="vllm")  # loads beside the first: vLLM's CPU start, a minute or two
    loaded = time.monotonic() - asked
    before = settle(vllm_pair, first, second, engine="vllm")
    for model in [first, second] * 3:
        complete(vllm_pair, model, engine="vllm")
    after = settle(vllm_pair, first, second, engine="vllm")
    assert {m: after[m]["pid"] for m in (first, second)} == {m: before[m]["pid"] for m in (first, second)}
    rss = {m: (after[m]["memory_rss_bytes"] or 0) / GiB for m in (first, second)}
    print(f"\nvLLM, two instances: {first} ({rss[first]:.2f} GiB) and {second} ({rss[second]:.2f} GiB), the second "
          f"loaded beside the first in {loaded:.0f} s; alternating requests restarted neither")

