"""Swap-aware scheduling against a fake supervisord: requests for two models of one engine are served grouped
by model (a minimum residency while requests keep coming) with a bound on any request's wait; loads that
every client has left are cancelled, queued or running."""

from __future__ import annotations

import asyncio
import time

import pytest

from engines.spec import read_plan, read_resume
from router.engine_state import State
from tests.unit.fakes import make_manager, no_illegal_transitions, spec, until  # noqa: F401 (an autouse fixture)

A, B = spec("a"), spec("b")


async def interleaved(manager, seconds: float) -> tuple[int, list[float]]:
    """Two clients, each asking for its own model back to back for `seconds`: (requests answered, waits)."""
    waits: list[float] = []
    deadline = time.monotonic() + seconds

    async def client(model):
        answered = 0
        while time.monotonic() < deadline:
            asked = time.monotonic()
            async with manager.admitted(model.served_name, None if manager.will_serve(model.served_name) else model,
                                        timeout=30):
                waits.append(time.monotonic() - asked)
                await asyncio.sleep(0.01)  # the engine answers
            answered += 1
        return answered
    counts = await asyncio.gather(client(A), client(B))
    return sum(counts), waits


@pytest.mark.parametrize("residency", [0.0, 0.5])
def test_interleaved_requests_swap_at_most_once_per_residency_and_none_waits_past_the_bound(tmp_path, residency):
    async def scenario():
        manager, sup, events = make_manager(tmp_path, min_residency_seconds=residency)
        await manager.load(A)
        answered, waits = await interleaved(manager, 2.0)
        return answered, waits, len(events.swapped_in) - 1  # the first is the initial load
    answered, waits, swaps = asyncio.run(scenario())
    print(f"\nresidency {residency} s: {answered} requests, {swaps} swaps, longest wait {max(waits):.2f} s")
    assert answered > 10
    if residency:
        assert swaps <= 2.0 / residency + 2  # one swap per residency at most (the loads are instant here)
        assert max(waits) < residency + 1.0  # passed over for one residency at most, never starved
    else:
        assert swaps > 2.0 / 0.5 + 2  # without a residency the engine swaps far more often: the rule matters


def test_an_idle_model_is_swapped_out_at_once_whatever_its_residency(tmp_path):
    async def scenario():
        manager, sup, _ = make_manager(tmp_path, min_residency_seconds=60)
        await manager.load(A)
        asked = time.monotonic()
        async with manager.admitted("b", B, timeout=5) as served:
            assert served == B
        assert time.monotonic() - asked < 5  # not the 60 s residency: nobody was asking for A
    asyncio.run(scenario())


def test_during_the_residency_the_served_model_answers_its_requests_ahead_of_the_swap(tmp_path):
    async def scenario():
        manager, sup, _ = make_manager(tmp_path, min_residency_seconds=60)
        await manager.load(A)
        async with manager.admitted("a", None, timeout=5):  # A is busy
            for_b = asyncio.ensure_future(manager.admitted("b", B, timeout=120).__aenter__())
            await until(lambda: manager.holding_until is not None, what="the swap to wait for A's residency")
            assert manager.will_serve("a") and manager.state is State.LOADED
            async with manager.admitted("a", None, timeout=1) as served:  # a later request for A goes ahead
                assert served == A
            assert "a serves its requests for up to" in manager._why_waiting("b", 1.0)  # what B's client hears
        manager.last_request_at = float("-inf")  # A's requests stop coming: the swap goes ahead
        assert await for_b == B
        manager.in_flight -= 1
    asyncio.run(scenario())


def test_an_explicit_load_does_not_wait_for_the_residency(tmp_path):
    async def scenario():
        manager, sup, _ = make_manager(tmp_path, min_residency_seconds=60)
        await manager.load(A)
        async with manager.admitted("a", None, timeout=5):
            pass  # A was just used
        await asyncio.wait_for(manager.load(B), 5)  # an operator's load is not deferred
        assert manager.details.spec == B
    asyncio.run(scenario())


def test_a_running_load_that_every_client_left_goes_back_to_idle_and_remembers_the_old_model(tmp_path):
    async def scenario():
        manager, sup, _ = make_manager(tmp_path, min_residency_seconds=0)
        await manager.load(A)
        sup.auto_ready = False  # B's engine never becomes ready: the load runs until cancelled
        request = asyncio.ensure_future(manager.admitted("b", B, timeout=60).__aenter__())
        await until(lambda: manager.state is State.LOADING and sup.calls.count("start") == 2, what="B to start")
        request.cancel()  # the client hangs up
        await until(lambda: manager.state is State.IDLE, what="the abandoned load to be cancelled")
        assert sup.state == "STOPPED" and read_plan(tmp_path, "llamacpp") is None
        assert manager.details.resume_spec == A and read_resume(tmp_path, "llamacpp").spec == A
        assert "abandoned" in manager.details.unload_reason and not manager._loads
        sup.auto_ready = True
        async with manager.admitted(None, manager.details.resume_spec, timeout=5) as served:  # A comes back
            assert served == A
    asyncio.run(scenario())


def test_a_load_left_while_it_drained_the_old_model_keeps_the_old_model_serving(tmp_path):
    async def scenario():
        manager, sup, _ = make_manager(tmp_path, min_residency_seconds=0, drain_seconds=60)
        await manager.load(A)
        async with manager.admitted("a", None, timeout=5):  # in flight: the swap drains it first
            request = asyncio.ensure_future(manager.admitted("b", B, timeout=60).__aenter__())
            await until(lambda: manager.state is State.LOADING, what="the swap to drain A")
            assert manager.details.load_phase == "draining the requests in flight"  # what status shows
            request.cancel()
            await until(lambda: manager.state is State.LOADED, what="A to be kept")
        assert manager.details.spec == A and read_plan(tmp_path, "llamacpp").spec == A
        assert sup.calls.count("stop") == 1 and len(sup.started_plans) == 1  # A was never stopped or restarted
    asyncio.run(scenario())


def test_a_load_left_during_the_residency_changes_nothing(tmp_path):
    async def scenario():
        manager, sup, _ = make_manager(tmp_path, min_residency_seconds=60)
        await manager.load(A)
        async with manager.admitted("a", None, timeout=5):
            request = asyncio.ensure_future(manager.admitted("b", B, timeout=60).__aenter__())
            await until(lambda: manager.holding_until is not None, what="the residency wait")
            request.cancel()
            await until(lambda: not manager._loads and manager.holding_until is None, what="the load to go")
        assert manager.state is State.LOADED and manager.details.spec == A and len(sup.started_plans) == 1
    asyncio.run(scenario())


def test_waiting_requests_and_their_waits_reach_the_metrics(tmp_path):
    async def scenario():
        manager, sup, events = make_manager(tmp_path, min_residency_seconds=0)
        await manager.load(A)
        started = sup.gate("start")
        for_b = asyncio.ensure_future(manager.admitted("b", B, timeout=5).__aenter__())
        await until(lambda: events.waiting == {"b": 1}, what="the waiting count")
        started.set()
        await for_b
        assert events.waiting == {} and len(events.waits) == 1 and events.swapped_in == ["a", "b"]
        manager.in_flight -= 1
    asyncio.run(scenario())
