"""Peers for real: two unified-llm routers on loopback, each with its own supervisord, run folder and llama.cpp
(the real small models where setup built them). `box2` guards its API with keys; `here` lists it under `peers:`
with the names of the variables that hold them. Through `here`: forwarded completions and chat, streamed and not,
through the openai SDK; the merged model list and /v1/peers; a load and an unload on box2; an on-demand load there;
the chat page with box2's models; spillover of a parallel load to both sides, counted from both routers' metrics; box2's router killed mid-stream
(an error event, not a hang), then its models refused at once, then served again once it is back."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal

import openai
import pytest
import yaml
from playwright.sync_api import expect

from tests.browser import chromium
from tests.stack import PROJECT, Stack, make_stack, wait_for

pytestmark = pytest.mark.e2e

REAL = (PROJECT / "models" / "smollm2-135m-instruct-q4_1.gguf").exists() and (
    PROJECT / "models" / "gemma-3-270m-q4_k_m.gguf").exists()
# SHARED is resident on both routers; OTHER is only in box2's catalog
SHARED, OTHER = ("smollm2-135m-instruct-gguf", "gemma-3-270m-gguf") if REAL else ("tiny-llama-a-gguf",
                                                                                   "tiny-llama-b-gguf")
BOX2_KEY, BOX2_ADMIN = "box2-user-key-51c2", "box2-admin-key-7e09"


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    def box2_config(config: dict) -> None:
        config["engines"] = {"llamacpp": config["engines"]["llamacpp"]}
        config["models"] = {n: m for n, m in config["models"].items() if m["engine"] == "llamacpp"}
        config["engines"]["llamacpp"].update(default_model=SHARED, max_instances=2)

    box2 = make_stack(tmp_path_factory.mktemp("box2"), box2_config)

    def here_config(config: dict) -> None:
        box2_config(config)
        del config["models"][OTHER]  # only box2 has it
        config["engines"]["llamacpp"]["max_instances"] = 1
        config["peers"] = {"box2": {"url": box2.base_url, "api_key_env": "PEER_BOX2_KEY",
                                    "admin_key_env": "PEER_BOX2_ADMIN_KEY"}}

    here = make_stack(tmp_path_factory.mktemp("here"), here_config)
    box2.start(env={"ULLM_API_KEY": BOX2_KEY, "ULLM_ADMIN_KEY": BOX2_ADMIN})
    try:
        here.start(env={"PEER_BOX2_KEY": BOX2_KEY, "PEER_BOX2_ADMIN_KEY": BOX2_ADMIN})
        try:
            box2.wait_loaded("llamacpp", timeout=120)
            here.wait_loaded("llamacpp", timeout=120)
            wait_for(lambda: peer(here)["health"] == "up" and SHARED in peer(here)["models"], 60,
                     "box2 to be up, with its models listed, on `here`")
            print(f"\npeers: shared model {SHARED}, box2 only {OTHER}" + ("" if REAL else " (tiny: no real models)"))
            yield here, box2
        finally:
            here.stop()
    finally:
        box2.stop()
    for stack in (here, box2):
        illegal = [line for line in stack.router_log().splitlines() if "illegal transition" in line]
        assert not illegal, illegal


def peer(stack: Stack, name: str = "box2") -> dict:
    return stack.api("GET", "/v1/peers", timeout=30)[1][name]


def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url + "/v1", api_key="no-key-here", max_retries=0, timeout=120)


def served_by_box2(box2: Stack) -> float:
    return box2.router_metric("unified_requests_total", status="200")


def forwarded_to_box2(here: Stack) -> float:  # and answered whole: the SDK hanging up after [DONE] is no 499
    return here.router_metric("unified_peer_requests_total", peer="box2", status="200")


def test_completions_and_chat_streamed_and_not_go_to_the_peer_through_the_openai_sdk(pair):
    here, box2 = pair
    sdk = client(here)
    forwarded, answered = forwarded_to_box2(here), served_by_box2(box2)
    prompt, chat = "The capital of France is", [{"role": "user", "content": "Name a colour."}]
    remote = sdk.completions.create(model=f"box2/{SHARED}", prompt=prompt, max_tokens=12, temperature=0)
    local = sdk.completions.create(model=SHARED, prompt=prompt, max_tokens=12, temperature=0,
                                   extra_body={"engine": "llamacpp"})
    assert remote.model == SHARED and remote.choices[0].text and remote.usage.completion_tokens > 0
    assert remote.choices[0].text == local.choices[0].text, "the same model, greedy: the same answer on both boxes"
    streamed = "".join(chunk.choices[0].text for chunk in sdk.completions.create(
        model=f"box2/{SHARED}", prompt=prompt, max_tokens=12, temperature=0, stream=True) if chunk.choices)
    assert streamed == remote.choices[0].text
    reply = sdk.chat.completions.create(model=f"box2/{SHARED}", messages=chat, max_tokens=12, temperature=0,
                                        extra_body={"engine": "llamacpp"})  # the engine field goes with it
    assert reply.choices[0].message.content
    pieces = [chunk.choices[0].delta.content or "" for chunk in sdk.chat.completions.create(
        model=f"box2/{SHARED}", messages=chat, max_tokens=12, temperature=0, stream=True) if chunk.choices]
    assert "".join(pieces) == reply.choices[0].message.content
    # a stream is counted once its handler ends, just after the client has read its last event
    wait_for(lambda: forwarded_to_box2(here) - forwarded == 4, 10,
             "the 4 forwarded requests to be counted")
    wait_for(lambda: served_by_box2(box2) - answered == 4, 10,  # with the key `here` sent for it
             "box2 to count the 4 requests it answered")
    with pytest.raises(openai.BadRequestError) as refused:  # box2's own error, passed through in its shape
        sdk.completions.create(model=f"box2/{SHARED}", prompt="x", max_tokens=2, extra_body={"engine": "vllm"})
    assert refused.value.body["code"] == "unknown_engine" and "llamacpp" in refused.value.body["message"]


def test_the_model_list_holds_both_routers_models_and_peers_get_their_own_report(pair):
    here, box2 = pair
    models = {m["id"]: m for m in here.api("GET", "/v1/models")[1]["data"]}
    assert models[SHARED]["peer"] is None and models[SHARED]["resident"] is True
    assert models[f"box2/{SHARED}"]["peer"] == "box2" and models[f"box2/{SHARED}"]["aliases"] == []  # shared
    assert models[f"box2/{OTHER}"]["aliases"] == [OTHER]  # only box2 has it: its own name answers too
    assert OTHER not in models
    report = peer(here)
    assert report["kind"] == "unified-llm" and report["latency_ms"] is not None and report["url"] == box2.base_url
    assert "llamacpp" in report["status"] and report["status_age_seconds"] <= 1.5
    assert set(here.status()) == {"llamacpp"}, "/v1/status keeps only the engines at its top level"


def test_a_load_and_an_unload_through_the_peer_then_an_on_demand_load_there(pair):
    here, box2 = pair
    status, loaded = here.api("POST", "/v1/models/load", {"peer": "box2", "engine": "llamacpp", "model": OTHER,
                                                          "keep_others": True})
    assert status == 200 and loaded["peer"] == "box2" and loaded["model"] == OTHER, loaded
    resident = {i["model"] for i in box2.status()["llamacpp"]["instances"]}
    assert {SHARED, OTHER} <= resident, "box2 loads it beside its model (max_instances 2)"
    status, unloaded = here.api("POST", "/v1/models/unload", {"peer": "box2", "engine": "llamacpp", "model": OTHER})
    assert status == 200 and unloaded["peer"] == "box2", unloaded
    assert OTHER not in {i["model"] for i in box2.status()["llamacpp"]["instances"]}
    assert here.api("POST", "/v1/models/load", {"peer": "box3", "model": OTHER})[1]["error"]["code"] == "unknown_peer"
    # a request by the model's own name: only box2's catalog has it, so box2 loads it on demand
    answer = client(here).completions.create(model=OTHER, prompt="Once", max_tokens=4, temperature=0)
    assert answer.model == OTHER and answer.choices[0].text
    assert any(i["model"] == OTHER and i["state"] == "loaded" for i in box2.status()["llamacpp"]["instances"])


def test_the_page_lists_the_peers_models_loads_one_there_and_chats_with_it(pair):
    """The chat page on `here`: box2's models are listed as box2/NAME with where they are; Load on one loads it
    on box2 (no load here), and a chat with it is answered there."""
    here, box2 = pair
    if any(i["model"] == OTHER for i in box2.status()["llamacpp"]["instances"]):  # the test before loaded it
        assert here.api("POST", "/v1/models/unload", {"peer": "box2", "engine": "llamacpp", "model": OTHER})[0] == 200
    answered = served_by_box2(box2)
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        errors, loads = [], []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("request", lambda r: loads.append(r.post_data_json) if r.url.endswith("/v1/models/load") else None)
        page.set_default_timeout(60_000)
        page.goto(here.base_url + "/")
        page.select_option("#engine", "llamacpp")
        option = page.locator(f'#model option[value="box2/{OTHER}"]')
        expect(option).to_have_text(f"box2/{OTHER} (not loaded on box2)")
        page.select_option("#model", f"box2/{OTHER}")
        expect(page.locator("#model-offer")).to_be_hidden()  # the peer loads it itself when asked
        page.click("#load")
        expect(page.locator("#load-state")).to_contain_text("(on peer box2)", timeout=120_000)
        if not page.evaluate("document.querySelector('#settings').open"):
            page.click("#settings > summary")
        page.fill("#max_tokens", "8")
        page.fill("#prompt", "Hi")
        page.click("#send")
        expect(page.locator("article.assistant")).to_have_attribute("data-state", "done", timeout=120_000)
    assert not errors, errors
    assert loads == [{"peer": "box2", "engine": "llamacpp", "model_path": OTHER, "keep_others": True}]
    assert any(i["model"] == OTHER for i in box2.status()["llamacpp"]["instances"])
    wait_for(lambda: served_by_box2(box2) > answered, 10, "box2 to count the chat")


def test_spillover_sends_part_of_a_parallel_load_to_each_side(pair):
    here, box2 = pair
    local_before = here.router_metric("unified_requests_total", engine="llamacpp", model=SHARED)
    sent_before = here.router_metric("unified_peer_requests_total", peer="box2", model=SHARED)
    box2_before = box2.router_metric("unified_requests_total", model=SHARED)

    def complete(n: int) -> str:
        return client(here).completions.create(model=SHARED, prompt=f"Story {n}:", max_tokens=48, temperature=0,
                                               extra_body={"ignore_eos": True}).model
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(complete, range(24)))
    assert answers == [SHARED] * 24
    wait_for(lambda: box2.router_metric("unified_requests_total", model=SHARED) - box2_before ==
             here.router_metric("unified_peer_requests_total", peer="box2", model=SHARED) - sent_before, 10,
             "box2 to count what it answered")
    local = here.router_metric("unified_requests_total", engine="llamacpp", model=SHARED) - local_before
    sent = here.router_metric("unified_peer_requests_total", peer="box2", model=SHARED) - sent_before
    on_box2 = box2.router_metric("unified_requests_total", model=SHARED) - box2_before
    print(f"\nspillover of 24 requests, 8 at a time: {local:.0f} here, {sent:.0f} to box2 ({on_box2:.0f} served there)")
    assert local + sent == 24 and local > 0 and sent > 0 and on_box2 == sent

    original = here.config_path.read_text()  # prefer: local: sequential requests never spill
    config = yaml.safe_load(original)
    config["peers"]["box2"].update(prefer="local", spill_after=4)
    here.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    try:
        assert here.api("POST", "/v1/config/reload")[1]["peers"]["changed"] == ["box2"]
        wait_for(lambda: peer(here)["health"] == "up" and peer(here)["prefer"] == "local", 60, "box2 up again")
        sent_before = here.router_metric("unified_peer_requests_total", peer="box2", model=SHARED)
        for n in range(4):
            complete(n)
        assert here.router_metric("unified_peer_requests_total", peer="box2", model=SHARED) == sent_before
    finally:
        here.config_path.write_text(original)
        assert here.api("POST", "/v1/config/reload")[0] == 200
        wait_for(lambda: peer(here)["health"] == "up", 60, "box2 up again")


def test_the_peer_killed_mid_stream_then_refused_at_once_then_served_when_it_is_back(pair):
    here, box2 = pair
    body = {"model": f"box2/{SHARED}", "prompt": "Once upon a time", "max_tokens": 4000, "ignore_eos": True,
            "stream": True}
    router_pid = int(box2.ctl("pid", "router").strip())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        streaming = pool.submit(here.api_raw, "POST", "/v1/completions", json.dumps(body).encode(),
                                "application/json", 120)
        wait_for(lambda: peer(here)["in_flight"] == 1, 60, "the stream to box2 to start")
        wait_for(lambda: box2.status()["llamacpp"]["in_flight"] == 1, 60, "box2 to be generating the stream")
        os.kill(router_pid, signal.SIGKILL)
        box2.ctl("stop", "router", check=False)  # and keep it down (supervisord would restart it)
        status, raw = streaming.result(timeout=120)
    events = [line[6:] for line in raw.decode().splitlines() if line.startswith("data: ")]
    assert status == 200 and events[-1] != "[DONE]", raw[-300:]
    error = json.loads(events[-1])["error"]
    assert error["code"] == "peer_failed" and "box2" in error["message"], error
    wait_for(lambda: peer(here)["health"] == "down", 30, "box2 to be marked down")
    status, refused = here.api("POST", "/v1/completions", {"model": f"box2/{SHARED}", "prompt": "x", "max_tokens": 2})
    assert status == 503 and refused["error"]["code"] == "peer_down", refused
    assert "box2 is down" in refused["error"]["message"]
    status, local = here.api("POST", "/v1/completions", {"model": SHARED, "prompt": "x", "max_tokens": 2})
    assert status == 200, "the shared model is served here meanwhile"
    assert here.router_metric("unified_peer_up", peer="box2") == 0
    assert here.router_metric("unified_peer_errors_total", peer="box2", reason="peer_down") >= 1

    box2.ctl("start", "router")
    wait_for(lambda: peer(here)["health"] == "up", 90, "box2 to be probed up again")
    status, answer = here.api("POST", "/v1/completions", {"model": f"box2/{SHARED}", "prompt": "x", "max_tokens": 2})
    assert status == 200 and answer["model"] == SHARED, answer
