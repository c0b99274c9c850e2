"""Retries are safe and useful: a request that stops waiting never cancels a load and its retry joins it, a 503
says when to come back (Retry-After), a full queue is 429, and errors a retry cannot fix carry
`x-should-retry: false`, which the real `openai` SDK obeys (checked against a tiny aiohttp server). Each test
names the part of issue 22 it covers."""

from __future__ import annotations

import asyncio
import threading
import time

import openai
import pytest
from aiohttp import web

from router.app import openai_errors
from router.config import parse_config
from router.engine_state import State
from router.errors import (EngineUnavailable, InvalidRequest, NotFound, PayloadTooLarge, TooManyRequests,
                           UnsupportedMediaType, error_response)
from router.handlers import openai_api
from router.memory_guard import InsufficientMemory
from router.metrics import RouterMetrics
from router.state import CONFIG, ENGINES, METRICS, LiveConfig
from tests.unit.fakes import Held, make_manager, no_illegal_transitions, spec, until  # noqa: F401 (an autouse fixture)

A, B, C = spec("a"), spec("b"), spec("c")


# ---- a request that stops waiting never cancels a load --------------------------------------------------------

def test_a_request_whose_wait_runs_out_leaves_the_load_going_and_its_retry_joins_it(tmp_path):
    async def scenario():
        manager, sup, events = make_manager(tmp_path, min_residency_seconds=0)
        await manager.load(A)
        sup.auto_ready = False  # B loads slowly
        with pytest.raises(EngineUnavailable) as err:  # the only request for B stops waiting
            async with manager.admitted("b", B, timeout=0.2):
                pass
        assert err.value.code == "engine_loading" and err.value.status == 503
        assert "Retry-After" in err.value.headers()
        await asyncio.sleep(0.1)
        assert [p.spec for p in manager.queue.loads] == [B] and manager.state is State.LOADING  # not cancelled
        retry = Held(manager, "b", None if manager.will_serve("b") else B)  # the client retries
        await until(lambda: manager.waiting == 1, what="the retry to wait")
        sup.ready_pids.add(sup.pid)
        assert await retry.served() == B
        await retry.release()
        assert [p.spec.served_name for p in sup.started_plans] == ["a", "b"]  # exactly one load of B
        assert events.swapped_in == ["a", "b"] and manager.in_flight == 0
    asyncio.run(scenario())


def test_retry_after_comes_from_the_models_last_load_and_the_loads_progress(tmp_path):
    async def scenario():
        manager, sup, _ = make_manager(tmp_path)
        await manager.load(A)
        manager.queue.history["b"] = 40.0  # B took 40 s last time
        sup.auto_ready = False
        with pytest.raises(EngineUnavailable) as err:
            async with manager.admitted("b", B, timeout=0.5):
                pass
        assert 35 <= err.value.retry_after <= 40, err.value.retry_after  # 40 s less the half second it ran
        assert err.value.headers()["Retry-After"] == str(int(-(-err.value.retry_after // 1)))
        manager.queue.history["b"] = 500.0
        assert EngineUnavailable("x", retry_after=manager.admission.expected_wait("b")).headers() == {"Retry-After": "60"}
        manager.queue.history["b"] = 40.0
        manager.queue.loads[0].started_at -= 100  # it runs 60 s longer than last time: a quarter more, not 1 s
        assert manager.admission.expected_wait("b") == 10.0
        sup.ready_pids.add(sup.pid)
        await until(lambda: manager.state is State.LOADED, what="B")
    asyncio.run(scenario())


# ---- defect 3: a full queue queues no load ---------------------------------------------------------------------

def test_a_request_refused_for_a_full_queue_queues_no_load(tmp_path):
    async def scenario():
        manager, sup, _ = make_manager(tmp_path, max_queued_requests=1, min_residency_seconds=0)
        await manager.load(A)
        started = sup.gate("start")
        for_b = Held(manager, "b", B)
        await until(lambda: manager.waiting == 1 and "start" in sup.blocked, what="B's request to wait")
        with pytest.raises(TooManyRequests) as err:
            async with manager.admitted("c", C, timeout=5):
                pass
        assert err.value.status == 429 and err.value.code == "queue_full"
        assert [p.spec for p in manager.queue.loads] == [B], "a load nobody waits for was queued"
        started.set()
        assert await for_b.served() == B
        await for_b.release()
        await asyncio.sleep(0.05)
        assert [p.spec.served_name for p in sup.started_plans] == ["a", "b"] and manager.details.spec == B
    asyncio.run(scenario())


# ---- defect 9: what tells clients whether and when to retry ----------------------------------------------------

@pytest.mark.parametrize("error", [InvalidRequest("x"), NotFound("x"), InsufficientMemory("x"),
                                   PayloadTooLarge("x"), UnsupportedMediaType("x"),
                                   InvalidRequest("x", status=422)])
def test_errors_a_retry_cannot_fix_say_so(error):
    response = error_response(error)
    assert response.headers["x-should-retry"] == "false" and "Retry-After" not in response.headers


@pytest.mark.parametrize("error", [EngineUnavailable("x", code="engine_idle"),
                                   EngineUnavailable("x", code="engine_loading", retry_after=12.2),
                                   TooManyRequests("x", code="queue_full")])
def test_503_and_429_carry_retry_after(error):
    response = error_response(error)
    assert int(response.headers["Retry-After"]) >= 1 and "x-should-retry" not in response.headers
    if error.retry_after:
        assert response.headers["Retry-After"] == "13"


def run_app(app: web.Application):
    """Serve `app` on a free port in a thread of its own (the SDK is synchronous): (base URL, stop)."""
    ready, box = threading.Event(), {}

    def serve():
        loop = asyncio.new_event_loop()
        runner = web.AppRunner(app)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        box["url"] = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        box["loop"] = loop
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(10)

    def stop():
        box["loop"].call_soon_threadsafe(box["loop"].stop)
        thread.join(10)
    return box["url"], stop


@pytest.mark.parametrize("error, tries", [
    (InsufficientMemory("does not fit", code="insufficient_memory"), 1),  # 409: the SDK would retry it twice
    (InvalidRequest("bad", code="invalid_type"), 1),
    (EngineUnavailable("still loading", code="engine_loading", retry_after=1), 3),
    (TooManyRequests("queue full", code="queue_full", retry_after=1), 3),
])
def test_the_openai_sdk_obeys_x_should_retry_and_retry_after(error, tries):
    asked: list[float] = []

    async def answer(request: web.Request) -> web.Response:
        asked.append(time.monotonic())
        raise error
    app = web.Application(middlewares=[openai_errors])
    app.router.add_post("/v1/completions", answer)
    url, stop = run_app(app)
    try:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused")  # default max_retries: 2
        with pytest.raises(openai.APIStatusError) as err:
            client.completions.create(model="m", prompt="hi", max_tokens=1)
    finally:
        stop()
    gaps = [later - earlier for earlier, later in zip(asked, asked[1:])]
    print(f"\n{error.status} {error.code}: {len(asked)} request(s), gaps {[f'{g:.2f}' for g in gaps]} s")
    assert err.value.status_code == error.status and len(asked) == tries
    assert all(gap >= 0.95 for gap in gaps), gaps  # Retry-After: 1, not the SDK's own 0.5 s backoff


def test_a_body_over_the_limit_is_counted_as_413_not_500():
    config = parse_config("engines:\n  vllm: {port: 8001}\n  llamacpp: {port: 8002}\nrouter: {max_body_bytes: 1024}\n")

    async def scenario():
        app = web.Application(middlewares=[openai_errors], client_max_size=1024)
        app[CONFIG], app[METRICS], app[ENGINES] = LiveConfig(config, None), RouterMetrics(), {}
        app.add_routes(openai_api.routes)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        import aiohttp
        try:
            async with aiohttp.ClientSession() as client:
                async with client.post(f"http://127.0.0.1:{port}/v1/completions", data=b"x" * 4096,
                                       headers={"Content-Type": "application/json"}) as resp:
                    status, headers = resp.status, resp.headers
        finally:
            await runner.cleanup()
        return status, headers, app[METRICS].render().decode()
    status, headers, metrics = asyncio.run(scenario())
    assert status == 413 and headers["x-should-retry"] == "false"
    assert 'status="413"' in metrics and 'status="500"' not in metrics, [
        line for line in metrics.splitlines() if line.startswith("unified_requests_total")]
