"""vLLM tensor parallel for real on this CPU box (docs/distributed.md): a catalog model with
`tensor_parallel_size: 2` and the mp backend loads through the router (two worker ranks, one core each) and
answers; then the same over two "boxes" on loopback (`nnodes: 2`, `master_addr: 127.0.0.1`): the head is the
router's engine, rank 1 the `vllm-worker` program from models.yaml's `workers:`, and when that worker goes away
the head ends in `error` with vLLM's own reason. One stack for the module: supervisord, the router and vLLM."""

from __future__ import annotations

import concurrent.futures
import os
import re
import time

import psutil
import pytest
from playwright.sync_api import expect

from tests.browser import chromium
from tests.stack import PROJECT, Stack, engine_environ, free_port, make_stack, wait_for

MODEL, TWO_NODES = "tiny-tp2", "tiny-tp2-two-nodes"

pytestmark = pytest.mark.skipif(not (PROJECT / "models" / "tiny-llama-a" / "config.json").exists(),
                                reason="models/tiny-llama-a is missing: run ./scripts/setup.sh (it builds it)")


@pytest.fixture(scope="module")
def tp2(tmp_path_factory) -> Stack:
    def edit(config: dict) -> None:
        del config["engines"]["llamacpp"]
        config["models"] = {name: entry for name, entry in config["models"].items() if entry["engine"] != "llamacpp"}
        # the tiny model: 2 attention heads, 1 KV head (vLLM replicates it on both ranks)
        config["models"][MODEL] = {"engine": "vllm", "path": "tiny-llama-a", "options": {
            "max_model_len": 2048, "tensor_parallel_size": 2, "distributed_executor_backend": "mp"}}
        config["models"][TWO_NODES] = {"engine": "vllm", "path": "tiny-llama-a", "options": {
            "max_model_len": 2048, "tensor_parallel_size": 2, "distributed_executor_backend": "mp", "nnodes": 2,
            "master_addr": "127.0.0.1", "master_port": free_port()}}
        config["engines"]["vllm"]["default_model"] = MODEL
        config["workers"] = {"vllm": {"model": TWO_NODES, "node_rank": 1, "host_ip": "127.0.0.1"}}
    stack = make_stack(tmp_path_factory.mktemp("tp2"), edit=edit)
    stack.start(env={"PYTHONPATH": str(PROJECT)})  # this checkout's code, wherever the venv's install points
    try:
        stack.wait_loaded("vllm", timeout=400)
        yield stack
    finally:
        stack.stop()


def ranks(stack: Stack) -> list[psutil.Process]:
    """vLLM's worker processes (one per tensor-parallel rank), below the engine's process."""
    head = psutil.Process(stack.engine_pid("vllm"))
    return [p for p in head.children(recursive=True) if "Worker_TP" in " ".join(p.cmdline()) or
            p.name().startswith("VLLM::Worker")]


def test_a_tensor_parallel_2_model_loads_on_two_ranks_one_core_each(tp2):
    entry = tp2.status()["vllm"]
    assert entry["distributed"] == {"runtime": "vllm mp", "tensor_parallel_size": 2, "pipeline_parallel_size": 1,
                                    "nnodes": 1, "master_addr": None, "ray_address": None, "waiting_for": None}
    env = engine_environ(entry["pid"])
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == ("0|1" if os.cpu_count() == 2 else env["VLLM_CPU_OMP_THREADS_BIND"])
    log = (tp2.home / "run" / "logs" / "vllm.log").read_text(errors="replace")
    assert "Worker_TP0" in log and "Worker_TP1" in log
    assert "local_world_size=2" in log
    print(f"\ntensor_parallel_size 2 loaded in {entry['load_seconds']:.1f} s; ranks: "
          f"{[p.pid for p in ranks(tp2)]}; estimate {entry['memory_estimate']['basis']}")


def test_it_answers_and_its_throughput_is_reported(tp2):
    body = None
    for max_tokens in (8, 256):  # the first request warms up
        started = time.monotonic()
        status, body = tp2.api("POST", "/v1/completions", {"model": MODEL, "prompt": "Once upon a time",
                                                           "max_tokens": max_tokens, "temperature": 0,
                                                           "ignore_eos": True}, timeout=300)
        seconds = time.monotonic() - started
        assert status == 200, body
    assert body["usage"]["completion_tokens"] == 256
    print(f"\nvLLM CPU, tensor_parallel_size 2 (mp, 2 ranks on 2 cores), tiny model, one stream: "
          f"{256 / seconds:.0f} tok/s end to end through the router")


def test_over_two_nodes_the_head_waits_for_the_worker_program_and_fails_with_its_reason_when_it_goes(tp2):
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # the load waits for the second box: it is not there yet
        loading = pool.submit(tp2.api, "POST", "/v1/models/load", {"engine": "vllm", "model_path": TWO_NODES},
                              timeout=400)
        waiting = wait_for(lambda: (tp2.status()["vllm"]["distributed"] or {}).get("waiting_for"), 300,
                           "the head to wait for the other box")
        port = tp2.status()["vllm"]["options"]["master_port"]
        assert waiting == (f"the other 1 box to join: the vllm-worker program with node_rank 1, which reaches this "
                           f"head at 127.0.0.1:{port}"), waiting
        with chromium() as browser:  # the chat page's vLLM card says it too
            page = browser.new_page()
            page.goto(tp2.base_url + "/")
            card = page.locator('.engine-card[data-engine="vllm"]')
            expect(card.locator(".waiting-for")).to_have_text(f"waiting for {waiting}", timeout=30_000)
            expect(card.locator(".spread")).to_have_text("vllm mp, 2 ranks across 2 boxes")
        print(f"\nthe head waited for the other box {time.monotonic() - started:.1f} s after the load began")
        tp2.ctl("start", "vllm-worker")  # the second box's program (here on the same box, on loopback)
        status, body = loading.result()
    assert status == 200, body
    assert tp2.status()["vllm"]["distributed"]["waiting_for"] is None
    print(f"nnodes 2 (head + vllm-worker on loopback) loaded in {time.monotonic() - started:.1f} s")
    worker_log = (tp2.home / "run" / "logs" / "vllm-worker.log").read_text(errors="replace")
    assert f"[worker] vllm: {TWO_NODES} from" in worker_log and "node 1 of 2" in worker_log
    assert "--headless --nnodes 2 --node-rank 1 --master-addr 127.0.0.1" in worker_log
    assert "Worker_TP1" in worker_log  # rank 1 runs in the worker program, not under the head
    status, body = tp2.api("POST", "/v1/completions", {"model": TWO_NODES, "prompt": "Once upon a time",
                                                       "max_tokens": 256, "temperature": 0, "ignore_eos": True})
    assert status == 200 and body["usage"]["completion_tokens"] == 256, body

    with tp2.router_settings(crash_restarts=0):  # stop at the first crash: show the error, do not restart
        tp2.ctl("stop", "vllm-worker")  # the second box goes away
        status, body = tp2.api("POST", "/v1/completions", {"model": TWO_NODES, "prompt": "Hi", "max_tokens": 8},
                               timeout=120)
        print(f"a request after the worker went: {status} {body}")

        def errored():
            entry = tp2.status()["vllm"]
            return entry if entry["state"] == "error" else None
        entry = wait_for(errored, 120, "vllm to show the lost worker")
        reason = re.search(r"Worker failed with error[^\n]*", entry["last_error"])
        assert reason and "Connection closed by peer" in reason[0], entry["last_error"]
        print(f"state error, cause {entry['state_cause']!r}; quoted reason: {reason[0][:300]!r}")
