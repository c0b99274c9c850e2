"""Admission against a fake supervisord: requests wait (bounded) for the model they need, hear why, are let
through in order around swaps, and leave no trace when they go; queued loads nobody waits for are dropped."""

from __future__ import annotations

import asyncio

import pytest

from router import admission
from router.engine_state import State
from router.errors import EngineUnavailable, InvalidRequest, LoadFailed, TooManyRequests
from tests.unit.fakes import Held, make_manager, no_illegal_transitions, spec, until  # noqa: F401 (an autouse fixture)

A, B, C = spec("a"), spec("b"), spec("c")


# ---- swaps serve the outgoing model's requests ------------------------------------------------------------

def test_a_request_for_the_outgoing_model_during_a_swap_waits_its_turn(tmp_path):
    async def scenario():
        manager, sup, _ = make_manager(tmp_path)
        await manager.load(A)
        started = sup.gate("start")
        swap = asyncio.ensure_future(manager.load(B))
        await until(lambda: manager.state is State.LOADING, what="the swap")
        order = []

        async def request(wanted, load):
            async with manager.admitted(wanted, load, timeout=5) as served:
                order.append(served.served_name)
                await asyncio.sleep(0.05)
        for_a = asyncio.ensure_future(request("a", A))  # arrives first, wants the outgoing model
        await asyncio.sleep(0)
        for_b = asyncio.ensure_future(request("b", None))
        await until(lambda: manager.waiting == 2, what="both requests to wait")
        started.set()
        await asyncio.gather(swap, for_a, for_b)
        assert order == ["b", "a"]  # B's waiter first (its load was first), then the swap back
        assert [p.spec.served_name for p in sup.started_plans] == ["a", "b", "a"]
        assert manager.in_flight == 0 and manager.details.spec == A
    asyncio.run(scenario())


def test_new_requests_for_the_current_model_queue_behind_a_pending_swap(tmp_path):
    async def scenario():
        manager, sup, _ = make_manager(tmp_path)
        await manager.load(A)
        async with manager.admitted("a", None, timeout=5):  # keeps A busy, so the swap waits in its drain
            swap = asyncio.ensure_future(manager.load(B))
            await until(lambda: manager.state is State.LOADING, what="the swap to begin")
            assert not manager.will_serve("a")
            late = Held(manager, "a", A, timeout=5)
            await asyncio.sleep(0.1)
            assert not late.done() and sup.calls.count("start") == 1  # still draining for us
        await swap
        served = await late.served()
        assert served == A and [p.spec.served_name for p in sup.started_plans] == ["a", "b", "a"]
        await late.release()
        assert manager.in_flight == 0
    asyncio.run(scenario())


def test_a_waiter_for_a_failed_load_hears_the_engines_error_without_its_log_lines(tmp_path):
    """Inference clients hear why the load failed; the engine's log text is for admins (status, logs)."""
    async def scenario():
        manager, sup, _ = make_manager(tmp_path)
        await manager.load(A)
        sup.start_fails = True
        with pytest.raises(LoadFailed, match="stopped during start") as err:
            async with manager.admitted("b", B, timeout=5):
                pass
        assert "failed to load model" not in err.value.message  # the fake engine's log line
        assert "failed to load model" in manager.details.last_error
        assert f"GET /v1/engines/{manager.name}/logs" in err.value.message
        assert manager.waiting == 0 and manager.in_flight == 0 and manager.state is State.ERROR
        with pytest.raises(EngineUnavailable, match="is in error: engine .* stopped during start") as later:
            async with manager.admitted(None, None, timeout=5):
                pass
        assert "failed to load model" not in later.value.message
    asyncio.run(scenario())


# ---- admission -----------------------------------------------------------------------------------------------

def test_a_request_waits_for_a_loading_engine_at_most_request_wait_seconds(tmp_path):
    async def scenario():
        manager, sup, _ = make_manager(tmp_path)
        sup.auto_ready = False
        loading = asyncio.ensure_future(manager.load(A))
        await until(lambda: manager.state is State.LOADING, what="loading")
        with pytest.raises(EngineUnavailable) as err:
            async with manager.admitted(None, None, timeout=0.3):
                pass
        assert err.value.code == "engine_loading" and manager.waiting == 0 and manager.in_flight == 0
        sup.ready_pids.add(sup.pid)
        await loading
    asyncio.run(scenario())


def test_a_client_that_leaves_while_waiting_leaves_no_trace(tmp_path):
    async def scenario():
        manager, sup, _ = make_manager(tmp_path)
        sup.auto_ready = False
        loading = asyncio.ensure_future(manager.load(A))
        await until(lambda: manager.state is State.LOADING, what="loading")
        leaves = Held(manager, None)
        await until(lambda: manager.waiting == 1, what="the waiter")
        leaves.cancel()  # gone while waiting
        with pytest.raises(asyncio.CancelledError):
            await leaves.task
        assert manager.waiting == 0 and manager.in_flight == 0

        raced = Held(manager, None)
        await until(lambda: manager.waiting == 1, what="the second waiter")
        waiter = manager.admission.waiters[0]
        sup.ready_pids.add(sup.pid)
        while not waiter.future.done():  # one loop turn at a time: stop right when it is let through
            await asyncio.sleep(0)
        assert manager.in_flight == 1 and not raced.done()
        raced.cancel()  # let through and gone in the same moment: its place is given back
        with pytest.raises(asyncio.CancelledError):
            await raced.task
        assert manager.waiting == 0 and manager.in_flight == 0
        await loading
    asyncio.run(scenario())


def test_a_full_queue_answers_429_with_retry_after(tmp_path):
    async def scenario():
        manager, sup, _ = make_manager(tmp_path, max_queued_requests=1)
        sup.auto_ready = False
        loading = asyncio.ensure_future(manager.load(A))
        await until(lambda: manager.state is State.LOADING, what="loading")
        first = Held(manager, None)
        await until(lambda: manager.waiting == 1, what="the first waiter")
        with pytest.raises(TooManyRequests) as err:
            async with manager.admitted(None, None, timeout=5):
                pass
        assert err.value.status == 429 and err.value.code == "queue_full"
        assert "Retry-After" in err.value.headers() and "x-should-retry" not in err.value.headers()
        sup.ready_pids.add(sup.pid)
        await loading
        assert await first.served() == A
        await first.release()
    asyncio.run(scenario())


def test_a_request_for_another_model_with_no_load_queued_is_refused(tmp_path):
    async def scenario():
        manager, _, _ = make_manager(tmp_path)
        await manager.load(A)
        with pytest.raises(InvalidRequest) as err:
            async with manager.admitted("b", None, timeout=5):
                pass
        assert err.value.code == "model_not_loaded"
    asyncio.run(scenario())


def test_a_waiting_request_hears_what_it_waits_for(tmp_path, monkeypatch):
    monkeypatch.setattr(admission, "NOTE_SECONDS", 0.05)

    async def scenario():
        manager, sup, _ = make_manager(tmp_path)
        await manager.load(A)
        started = sup.gate("start")
        swap = asyncio.ensure_future(manager.load(B))
        await until(lambda: "start" in sup.blocked, what="the swap to start B")
        notes: list[str] = []

        async def note(text: str) -> None:
            notes.append(text)
            if len(notes) == 3:
                started.set()
        async with manager.admitted("a", A, timeout=5, notify=note) as served:
            assert served == A
        await swap
        assert notes[0].startswith("waiting for llamacpp to load a, after 1 other load: ")
        assert len(notes) >= 3
    asyncio.run(scenario())


def test_a_queued_load_whose_requests_all_hung_up_is_dropped(tmp_path):
    async def scenario():
        manager, sup, _ = make_manager(tmp_path)
        await manager.load(A)
        started = sup.gate("start")
        swap = asyncio.ensure_future(manager.load(B))  # explicit: it goes on whoever waits
        await until(lambda: "start" in sup.blocked, what="the swap to start B")
        for_c = Held(manager, "c", C)  # the only request for C hangs up while C is still queued
        await until(lambda: manager.waiting == 1, what="the request for C to wait")
        for_c.cancel()
        with pytest.raises(asyncio.CancelledError):
            await for_c.task
        assert [p.spec for p in manager.queue.loads] == [B]
        started.set()
        await swap
        await until(lambda: not manager.queue.loads, what="the queue to empty")
        assert [p.spec.served_name for p in sup.started_plans] == ["a", "b"] and manager.details.spec == B
    asyncio.run(scenario())
