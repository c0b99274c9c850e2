"""Memory estimates from the model files themselves, and the admission rule that refuses a load which would
leave less than the reserve free."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from engines import memory
from engines.memory import GiB, MemoryEstimate, VLLM_CPU_RUNTIME, gguf_kv_shape, gguf_parts
from engines.registry import ADAPTERS
from engines.spec import LaunchPlan, ModelSpec
from router.engine_state import State
from router.memory_guard import InsufficientMemory, check_fits
from tests.unit.fakes import make_manager, no_illegal_transitions, until  # noqa: F401 (an autouse fixture)

MODELS = Path(__file__).resolve().parents[2] / "models"
TINY_GGUF = MODELS / "tiny-llama-a.gguf"


@pytest.fixture(autouse=True)
def cpu_pool(monkeypatch):
    monkeypatch.setenv("ULLM_MEMORY_POOL", "cpu")
    memory.memory_pool.cache_clear()
    yield
    memory.memory_pool.cache_clear()


def gguf_plan(path: Path, ctx_size: int = 2048, extra: tuple[str, ...] = ()) -> LaunchPlan:
    spec = ModelSpec("llamacpp", str(path), path.stem, {"ctx_size": ctx_size, "parallel": 4})
    return LaunchPlan(spec, 8002, ["llama-server", "-m", str(path), "-c", str(ctx_size), "--parallel", "4", *extra],
                      {})


def estimate_for(plan: LaunchPlan) -> MemoryEstimate:
    return ADAPTERS[plan.spec.engine].estimate_memory(plan)  # as a load asks for it (router/load_runner.py)


def test_the_tiny_gguf_estimate_matches_a_hand_computation_from_its_metadata():
    # its metadata (scripts/build_tiny_models.py): 2 layers, 1 KV head, key and value length 64
    assert gguf_kv_shape(TINY_GGUF) == (2, 1, 64 + 64)
    estimate = estimate_for(gguf_plan(TINY_GGUF))
    kv_cache = 2 * 2048 * 1 * (64 + 64) * 2  # layers x cells x KV heads x (K+V length) x f16 bytes = 1 MiB
    assert estimate.kv_cache_bytes == kv_cache == 1 << 20
    assert estimate.weights_bytes == TINY_GGUF.stat().st_size
    assert estimate.total_bytes == TINY_GGUF.stat().st_size + kv_cache and estimate.pool == "cpu"
    assert "2048 cells x 2 layers x 1 KV heads" in estimate.basis


def test_a_quantised_kv_cache_and_a_longer_context_change_the_estimate():
    f16 = estimate_for(gguf_plan(TINY_GGUF, 8192)).kv_cache_bytes
    assert f16 == 4 << 20
    q8 = estimate_for(gguf_plan(TINY_GGUF, 8192, ("-ctk", "q8_0", "--cache-type-v=q8_0"))).kv_cache_bytes
    assert q8 == int(2 * 8192 * 1 * 128 * 34 / 32)


def test_a_split_gguf_counts_every_part(tmp_path):
    first = tmp_path / "big-00001-of-00003.gguf"
    assert gguf_parts(first) == [tmp_path / f"big-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    assert gguf_parts(TINY_GGUF) == [TINY_GGUF]


def test_a_vllm_cpu_estimate_is_weights_plus_kv_space_plus_runtime():
    folder = MODELS / "tiny-llama-a"
    spec = ModelSpec("vllm", str(folder), "tiny-llama-a", {"max_model_len": 2048})
    weights = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
    estimate = estimate_for(LaunchPlan(spec, 8001, ["python", "-m", "vllm"], {"VLLM_CPU_KVCACHE_SPACE": "1"}))
    assert weights > 0 and estimate.weights_bytes == weights
    assert estimate.total_bytes == weights + GiB + VLLM_CPU_RUNTIME


def estimate_of(total_gib: float, pool: str = "cpu") -> MemoryEstimate:
    return MemoryEstimate(int(total_gib * GiB), int(total_gib * GiB), 0, 0, "test", pool)


def test_a_load_that_would_leave_less_than_the_reserve_is_refused_with_the_numbers():
    with pytest.raises(InsufficientMemory) as err:
        check_fits("vllm", "big", estimate_of(60), 8, available=64 * GiB, freed=0, others={"llamacpp": 40 * GiB})
    message = err.value.message
    assert err.value.status == 409 and err.value.code == "insufficient_memory"
    for figure in ("60.00 GiB", "64.00 GiB is available", "keeps 8.00 GiB free", "llamacpp holds 40.00 GiB",
                   '"force": true'):
        assert figure in message, message
    check_fits("vllm", "big", estimate_of(56), 8, available=64 * GiB, freed=0, others={})  # exactly the reserve left


def test_what_the_swapped_out_model_frees_counts_and_a_discrete_gpu_or_no_reserve_is_not_checked():
    check_fits("vllm", "big", estimate_of(60), 8, available=40 * GiB, freed=30 * GiB, others={})
    check_fits("vllm", "big", estimate_of(60, "discrete-gpu"), 8, available=GiB, freed=0, others={})
    check_fits("vllm", "big", estimate_of(60), None, available=GiB, freed=0, others={})


def test_a_refused_load_changes_nothing_and_force_overrides(tmp_path):
    a = ModelSpec("llamacpp", str(TINY_GGUF), "a", {"ctx_size": 2048})
    b = ModelSpec("llamacpp", str(MODELS / "tiny-llama-b.gguf"), "b", {"ctx_size": 2048})

    async def scenario():
        manager, sup, _ = make_manager(tmp_path)
        await manager.load(a)
        assert manager.details.memory_estimate.weights_bytes == TINY_GGUF.stat().st_size
        manager.router_settings = manager.router_settings.model_copy(update={"memory_reserve_gib": 1e6})
        with pytest.raises(InsufficientMemory):
            await manager.load(b)
        assert manager.state is State.LOADED and manager.details.spec == a and len(sup.started_plans) == 1
        with pytest.raises(InsufficientMemory, match="needs about"):  # a request's on-demand load: the same rule
            async with manager.admitted("b", b, timeout=5):
                pass
        assert manager.details.spec == a and manager.waiting == 0
        await manager.load(b, force=True)
        assert manager.state is State.LOADED and manager.details.spec == b
    asyncio.run(scenario())


# ---- one ledger for both engines (issue 22, defect 1) -------------------------------------------------------

class Box:
    """A machine whose available memory is what the fake engines running on it leave."""

    def __init__(self, total_gib: float, per_engine_gib: float):
        self.total, self.per_engine, self.sups = total_gib * GiB, per_engine_gib * GiB, []

    def available(self) -> int:
        return int(self.total - self.per_engine * sum(1 for sup in self.sups if sup.state in ("RUNNING", "STARTING")
                                                       and sup.pid in sup.ready_pids))


def two_engines(tmp_path, monkeypatch, box: Box, estimate_gib: float):
    from router import load_runner, memory_guard
    for adapter in ADAPTERS.values():
        monkeypatch.setattr(adapter, "estimate_memory", lambda plan: estimate_of(estimate_gib))
    monkeypatch.setattr(memory_guard, "available_bytes", box.available)  # the code before the ledger read these
    monkeypatch.setattr(load_runner, "available_bytes", box.available, raising=False)
    ledger_class = getattr(memory_guard, "MemoryLedger", None)

    async def no_rss(pid: int) -> int:
        return 0  # a fake engine takes nothing until it is ready
    ledger = ledger_class(available=box.available, measure=no_rss, settle_seconds=0) if ledger_class else None
    (tmp_path / "v").mkdir()
    (tmp_path / "l").mkdir()
    vllm, vsup, _ = make_manager(tmp_path / "v", engine="vllm", port=18001, ledger=ledger, memory_reserve_gib=4)
    llama, lsup, _ = make_manager(tmp_path / "l", ledger=ledger, memory_reserve_gib=4)
    box.sups += [vsup, lsup]
    return (vllm, vsup), (llama, lsup)


def test_two_loads_that_do_not_fit_together_are_never_both_started(tmp_path, monkeypatch):
    """At start-up both default models load at once: each check alone sees the memory before the other engine
    took its share. 10 GiB, a 4 GiB reserve, two 4 GiB models: one fits, both do not."""
    box = Box(total_gib=10, per_engine_gib=4)
    (vllm, vsup), (llama, lsup) = two_engines(tmp_path, monkeypatch, box, estimate_gib=4)
    vspec = ModelSpec("vllm", str(tmp_path / "m"), "m", {"max_model_len": 2048})
    lspec = ModelSpec("llamacpp", str(tmp_path / "g.gguf"), "g", {"ctx_size": 2048})

    async def scenario():
        vsup.auto_ready = False  # vLLM takes its time to load
        first = asyncio.ensure_future(vllm.load(vspec))
        await until(lambda: vsup.calls.count("start") == 1, what="vLLM to start")
        second = asyncio.ensure_future(llama.load(lspec))  # llama.cpp's check while vLLM loads
        await asyncio.sleep(0.2)
        vsup.ready_pids.add(vsup.pid)  # vLLM is ready and takes its 4 GiB
        results = await asyncio.gather(first, second, return_exceptions=True)
        return results
    results = asyncio.run(scenario())
    started = [name for name, sup in (("vllm", vsup), ("llamacpp", lsup)) if sup.started_plans]
    assert started == ["vllm"], f"both loads started: {results}"
    assert isinstance(results[1], InsufficientMemory) and "needs about 4.00 GiB" in results[1].message
    assert llama.state is State.IDLE and vllm.state is State.LOADED


def test_a_load_that_fits_once_the_other_load_shows_its_real_size_waits_for_it(tmp_path, monkeypatch):
    """Serialised, not refused: the estimate (4 GiB) is more than the loading engine really takes (1 GiB)."""
    box = Box(total_gib=10, per_engine_gib=1)
    (vllm, vsup), (llama, lsup) = two_engines(tmp_path, monkeypatch, box, estimate_gib=4)
    vspec = ModelSpec("vllm", str(tmp_path / "m"), "m", {"max_model_len": 2048})
    lspec = ModelSpec("llamacpp", str(tmp_path / "g.gguf"), "g", {"ctx_size": 2048})

    async def scenario():
        vsup.auto_ready = False
        first = asyncio.ensure_future(vllm.load(vspec))
        await until(lambda: vsup.calls.count("start") == 1, what="vLLM to start")
        second = asyncio.ensure_future(llama.load(lspec))
        await asyncio.sleep(0.2)
        assert not lsup.started_plans and llama.state is State.IDLE  # waiting for vLLM's real size
        vsup.ready_pids.add(vsup.pid)
        await asyncio.gather(first, second)
        assert vllm.ledger.reservations == {} and vllm.ledger.held == {"vllm": 0, "llamacpp": 0}
    asyncio.run(scenario())
    assert vsup.started_plans and lsup.started_plans


def test_the_next_check_after_a_stop_waits_until_available_memory_stops_rising(monkeypatch):
    from router.memory_guard import MemoryLedger
    monkeypatch.setattr("router.memory_guard.SETTLE_POLL_SECONDS", 0.02)
    readings = iter([2, 4, 6, 8, 8])  # GiB: the freed memory comes back over a few polls, then settles

    def available() -> int:
        return int(next(readings, 8) * GiB)

    async def scenario():
        ledger = MemoryLedger(available=available, settle_seconds=5)
        ledger.stopped("vllm")
        await ledger.reserve("llamacpp", "g", estimate_of(3), 4, 0, {})  # 8 - 3 >= 4: fits once settled
        return ledger
    ledger = asyncio.run(scenario())
    assert ledger.reservations["llamacpp"].bytes == 3 * GiB


def test_the_settle_wait_is_bounded_and_a_passing_check_never_waits(monkeypatch):
    from router.memory_guard import MemoryLedger
    monkeypatch.setattr("router.memory_guard.SETTLE_POLL_SECONDS", 0.02)
    rising = iter(range(1, 10**6))

    async def scenario():
        ledger = MemoryLedger(available=lambda: next(rising) * GiB, settle_seconds=0.2)
        ledger.stopped("vllm")
        started = time.monotonic()
        with pytest.raises(InsufficientMemory):  # memory rising for ever, never enough: bounded, then refused
            await ledger.reserve("llamacpp", "g", estimate_of(1), 10**6, 0, {})
        waited = time.monotonic() - started
        ledger.stopped("vllm")
        started = time.monotonic()
        await ledger.reserve("llamacpp", "g", estimate_of(1), 0, 0, {})  # fits at once: no settle wait
        return waited, time.monotonic() - started
    waited, passing = asyncio.run(scenario())
    print(f"\nsettle wait with memory rising for ever: {waited:.2f} s (bound 0.2 s); a passing check: "
          f"{passing:.3f} s")
    assert 0.2 <= waited < 2 and passing < 0.1


def test_the_outstanding_reservations_survive_a_load_that_ends_while_they_are_measured():
    """A load may end (its reservation dropped) while another check measures what the loads have taken: the
    check goes on with what is left instead of failing (it answered a load with 500 once)."""
    from router.memory_guard import MemoryLedger, Reservation

    async def scenario():
        ledger = MemoryLedger(available=lambda: 100 * GiB, settle_seconds=0)

        async def measure(pid: int) -> int:
            ledger.release("llamacpp")  # llama.cpp's load ends during the measurement
            return GiB // 2
        ledger.measure = measure
        ledger.reservations = {"vllm": Reservation("vllm", "a", 3 * GiB, pid=1),
                               "llamacpp": Reservation("llamacpp", "b", GiB, pid=2)}
        assert await ledger.outstanding(but="vllm-1") == {"vllm": 3 * GiB - GiB // 2, "llamacpp": GiB // 2}
    asyncio.run(scenario())
