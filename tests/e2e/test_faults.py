"""Faults caused for real against the real stack: an engine killed mid-stream, an engine that crashes at
every start, a crash loop, the router killed with kill -9, a stalled engine (SIGSTOP), and a run folder that
cannot be written. Each test prints the intervals it measured; docs/reliability.md quotes them."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import threading
import time

import psutil

from engines import process_group
from engines.spec import read_plan
from tests.stack import PROJECT, wait_for


def completion(stack, engine: str, **extra) -> tuple[int, dict]:
    body = {"engine": engine, "prompt": "Once upon a time", "max_tokens": 8, **extra}
    return stack.api("POST", "/v1/completions", body, timeout=120)


def spawns(stack, program: str) -> int:
    """How many times supervisord has started `program` (its own log says so for each start)."""
    logs = (stack.home / "run" / "logs").glob("supervisord.log*")
    return sum(path.read_text(errors="replace").count(f"spawned: '{program}'") for path in logs)


def test_kill_9_of_an_engine_mid_stream(stack):
    """The stream ends with an error event within a second, a non-streamed request in flight gets a 502/503
    with the reason, supervisord restarts the engine with the same model, status counts the restart, and new
    requests succeed."""
    with stack.crashes_on_purpose():  # killed on purpose: not a crash loop
        before = stack.wait_loaded("vllm")
        # 8 x 1800 tokens keep vLLM's CPU build busy for several seconds: the stream is really in flight
        long = {"engine": "vllm", "prompt": "Hi", "max_tokens": 1800, "ignore_eos": True}
        streamed: dict = {}
        plain: dict = {}
        streaming = threading.Event()

        def stream():
            connection = http.client.HTTPConnection("127.0.0.1", stack.router_port, timeout=300)
            connection.request("POST", "/v1/completions", json.dumps({**long, "n": 8, "stream": True}),
                               {"Content-Type": "application/json"})
            response = connection.getresponse()
            streamed["status"] = response.status
            while line := response.readline():
                if line.startswith(b"data: {"):
                    streaming.set()
                    streamed["last"] = line
            streamed["ended"] = time.monotonic()

        def non_streamed():
            plain["status"], plain["body"] = stack.api("POST", "/v1/completions", long, timeout=300)
            plain["ended"] = time.monotonic()

        clients = [threading.Thread(target=stream), threading.Thread(target=non_streamed)]
        for client in clients:
            client.start()
        assert streaming.wait(120), "vLLM did not start streaming"
        wait_for(lambda: stack.status()["vllm"]["in_flight"] == 2, 60, "both requests to be in flight")
        os.kill(before["pid"], signal.SIGKILL)
        killed = time.monotonic()
        for client in clients:
            client.join(30)
        assert not any(client.is_alive() for client in clients), "a client still waits 30 s after the engine died"

        error = json.loads(streamed["last"][len(b"data: "):])["error"]
        assert streamed["status"] == 200 and error["type"] == "upstream_error", streamed
        assert plain["status"] in (502, 503) and plain["body"]["error"]["message"], plain
        restart_seen = wait_for(lambda: stack.status()["vllm"]["restarts"] > before["restarts"] and time.monotonic(),
                                60, "status to count the restart")
        after = wait_for(lambda: (s := stack.status()["vllm"])["status"] == "loaded" and s["pid"] != before["pid"] and s,
                         300, "vLLM to come back with a new process")
        back = time.monotonic()
        assert after["model"] == before["model"] and after["restarts"] == before["restarts"] + 1
        assert completion(stack, "vllm")[0] == 200
        answered = time.monotonic()
        print(f"\nkill -9 of vLLM mid-stream: stream error event after {streamed['ended'] - killed:.3f}s, "
              f"non-streamed {plain['status']} after {plain['ended'] - killed:.3f}s, restart in status after "
              f"{restart_seen - killed:.1f}s, loaded again after {back - killed:.1f}s, "
              f"first new answer after {answered - killed:.1f}s")
        assert streamed["ended"] - killed < 5.0, "the stream's error event came more than 5 s after the kill"
        assert process_group.members(before["pid"]) == []  # no orphan of the killed engine survives


def test_an_engine_that_crashes_at_every_start_ends_in_error_without_a_restart_storm(stack, restore_llamacpp):
    model = stack.home / "scratch" / "crashes-at-start.gguf"
    shutil.copy(PROJECT / "models" / "tiny-llama-a.gguf", model)
    status, body = stack.api("POST", "/v1/models/load", {"engine": "llamacpp", "model_path": str(model)})
    assert status == 200, body
    started = spawns(stack, "llamacpp")
    model.write_bytes(b"GGUF" + os.urandom(4096))  # every start from now on fails
    os.kill(body["pid"], signal.SIGKILL)
    killed = time.monotonic()

    def in_error():
        state = stack.status()["llamacpp"]
        return state if state["status"] == "error" else None
    state = wait_for(in_error, 120, "llama.cpp to end in error")
    failed_starts = spawns(stack, "llamacpp") - started
    print(f"\ncorrupt model: error after {time.monotonic() - killed:.1f}s and {failed_starts} failed start(s)")
    # supervisord retries a start that dies at once startretries (2) times; one that dies later is stopped by
    # the router's crash-loop guard (crash_restarts): either way a handful of tries, then nothing restarts it
    assert 1 <= failed_starts <= 5, failed_starts
    assert "last log lines" in state["last_error"], state["last_error"]  # no keys: status quotes the log
    assert not state["process_alive"]
    assert stack.ctl("status", "llamacpp").split()[1] in ("FATAL", "STOPPED")
    assert spawns(stack, "llamacpp") - started == failed_starts  # still nothing restarting it
    # a later good load recovers
    status, body = stack.api("POST", "/v1/models/load", {"engine": "llamacpp", "model_path": "tiny-llama-b-gguf"})
    assert status == 200, body
    assert completion(stack, "llamacpp")[0] == 200


def test_an_engine_that_keeps_crashing_after_it_came_up_is_stopped(stack, restore_llamacpp):
    """supervisord restarts an engine that dies after it came up for ever; the router stops the loop."""
    with stack.router_settings(crash_restarts=1, crash_window_seconds=300):
        status, body = stack.api("POST", "/v1/models/load", {"engine": "llamacpp", "model_path": "tiny-llama-b-gguf"})
        assert status == 200, body  # a new launch: earlier crashes in the session do not count against it
        pid, started = body["pid"], spawns(stack, "llamacpp")
        os.kill(pid, signal.SIGKILL)
        pid = wait_for(lambda: (s := stack.status()["llamacpp"])["status"] == "loaded" and s["pid"] != pid
                       and s["pid"], 60, "the first restart")
        os.kill(pid, signal.SIGKILL)  # the second crash within the window is one too many
        state = wait_for(lambda: (s := stack.status()["llamacpp"])["status"] == "error" and s, 60,
                         "the router to stop the crash loop")
    assert state["state_cause"] == "a crash loop" and "restarted 2 times within 300 s" in state["last_error"]
    assert stack.ctl("status", "llamacpp").split()[1] == "STOPPED"
    assert spawns(stack, "llamacpp") - started == 2
    print(f"\ncrash loop stopped after {spawns(stack, 'llamacpp') - started} restarts")


def test_the_router_killed_with_kill_9_adopts_both_running_engines(stack):
    engines = {name: stack.wait_loaded(name) for name in ("vllm", "llamacpp")}
    router_pid = int(stack.ctl("pid", "router"))
    os.kill(router_pid, signal.SIGKILL)
    killed = time.monotonic()

    def router_back():
        try:
            return int(stack.ctl("pid", "router")) not in (0, router_pid) and stack.status()
        except (OSError, ValueError, KeyError):
            return None
    wait_for(router_back, 60, "supervisord to restart the router")
    answering = time.monotonic()
    after = {name: stack.wait_loaded(name, 60) for name in engines}
    adopted = time.monotonic()
    for name, before in engines.items():
        assert after[name]["pid"] == before["pid"], f"{name} was restarted instead of adopted"
        assert after[name]["model"] == before["model"] and psutil.pid_exists(before["pid"])
        assert completion(stack, name)[0] == 200
    print(f"\nrouter kill -9: answering again after {answering - killed:.1f}s, both engines adopted (same PIDs) "
          f"after {adopted - killed:.1f}s")


def test_a_stalled_engine_times_out_with_504_while_the_other_engine_serves(stack):
    """SIGSTOP freezes llama-server for real: it accepts connections and never answers."""
    pid = stack.wait_loaded("llamacpp")["pid"]
    stack.wait_loaded("vllm")
    answers: dict = {}
    with stack.router_settings(upstream_read_timeout_seconds=3):
        os.kill(pid, signal.SIGSTOP)
        try:
            def stalled(kind: str, **extra):
                started = time.monotonic()
                answers[kind] = (*completion(stack, "llamacpp", **extra), time.monotonic() - started)
            waiting = [threading.Thread(target=stalled, args=("plain",)),
                       threading.Thread(target=stalled, args=("stream",), kwargs={"stream": True})]
            for thread in waiting:
                thread.start()
            other = time.monotonic()
            assert completion(stack, "vllm")[0] == 200  # the other engine is unaffected meanwhile
            other = time.monotonic() - other
            for thread in waiting:
                thread.join(60)
        finally:
            os.kill(pid, signal.SIGCONT)
    for kind in ("plain", "stream"):
        status, body, seconds = answers[kind]
        # before the first byte, a stream's timeout is a plain 504 too (no SSE headers were sent yet)
        assert status == 504 and body["error"]["type"] == "upstream_timeout", (kind, body)
        print(f"\nstalled llama-server, {kind} request: 504 after {seconds:.1f}s (read timeout 3 s)")
    print(f"vLLM answered in {other:.2f}s meanwhile")
    state = stack.status()["llamacpp"]
    assert state["status"] == "loaded" and state["pid"] == pid  # a stall is not a crash: nothing restarted
    assert completion(stack, "llamacpp")[0] == 200  # and it serves again once it runs


def test_a_run_folder_that_cannot_be_written_refuses_the_load_and_keeps_the_state(stack):
    """A file-size limit of 0 on the router process makes every write it tries fail with EFBIG, as a full
    disk would (ENOSPC) and for the same code paths."""
    before = stack.wait_loaded("llamacpp")
    router = psutil.Process(int(stack.ctl("pid", "router")))
    limit = router.rlimit(psutil.RLIMIT_FSIZE)
    router.rlimit(psutil.RLIMIT_FSIZE, (0, limit[1]))  # (an unload writes no bytes: only loads can fail so)
    try:
        status, body = stack.api("POST", "/v1/models/load", {"engine": "llamacpp", "model_path": "tiny-llama-b-gguf"})
    finally:
        router.rlimit(psutil.RLIMIT_FSIZE, limit)
    assert status == 507 and body["error"]["code"] == "run_folder_full", body
    assert "nothing was changed" in body["error"]["message"] and "File too large" in body["error"]["message"]
    state = stack.status()["llamacpp"]
    assert state["status"] == "loaded" and state["model"] == before["model"] and state["pid"] == before["pid"]
    assert read_plan(stack.home / "run", "llamacpp").spec.served_name == before["model"]  # still recorded
    assert completion(stack, "llamacpp")[0] == 200
