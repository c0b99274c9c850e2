"""Memory estimates from the model files themselves, and the admission rule that refuses a load which would
leave less than the reserve free."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engines import memory
from engines.memory import GiB, MemoryEstimate, VLLM_CPU_RUNTIME, gguf_kv_shape, gguf_parts
from engines.spec import LaunchPlan, ModelSpec
from router.engine_state import State
from router.memory_guard import InsufficientMemory, check_fits
from tests.unit.fakes import make_manager, no_illegal_transitions  # noqa: F401 (an autouse fixture)

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


def test_the_tiny_gguf_estimate_matches_a_hand_computation_from_its_metadata():
    # its metadata (scripts/build_tiny_models.py): 2 layers, 1 KV head, key and value length 64
    assert gguf_kv_shape(TINY_GGUF) == (2, 1, 64 + 64)
    estimate = memory.estimate(gguf_plan(TINY_GGUF))
    kv_cache = 2 * 2048 * 1 * (64 + 64) * 2  # layers x cells x KV heads x (K+V length) x f16 bytes = 1 MiB
    assert estimate.kv_cache_bytes == kv_cache == 1 << 20
    assert estimate.weights_bytes == TINY_GGUF.stat().st_size
    assert estimate.total_bytes == TINY_GGUF.stat().st_size + kv_cache and estimate.pool == "cpu"
    assert "2048 cells x 2 layers x 1 KV heads" in estimate.basis


def test_a_quantised_kv_cache_and_a_longer_context_change_the_estimate():
    f16 = memory.estimate(gguf_plan(TINY_GGUF, 8192)).kv_cache_bytes
    assert f16 == 4 << 20
    q8 = memory.estimate(gguf_plan(TINY_GGUF, 8192, ("-ctk", "q8_0", "--cache-type-v=q8_0"))).kv_cache_bytes
    assert q8 == int(2 * 8192 * 1 * 128 * 34 / 32)


def test_a_split_gguf_counts_every_part(tmp_path):
    first = tmp_path / "big-00001-of-00003.gguf"
    assert gguf_parts(first) == [tmp_path / f"big-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    assert gguf_parts(TINY_GGUF) == [TINY_GGUF]


def test_a_vllm_cpu_estimate_is_weights_plus_kv_space_plus_runtime():
    folder = MODELS / "tiny-llama-a"
    spec = ModelSpec("vllm", str(folder), "tiny-llama-a", {"max_model_len": 2048})
    weights = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
    estimate = memory.estimate(LaunchPlan(spec, 8001, ["python", "-m", "vllm"], {"VLLM_CPU_KVCACHE_SPACE": "1"}))
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
