"""engines/transformers.py, the Transformers engine's adapter (not yet registered): it has the shape every engine
adapter has, its options are strict, its argv is what the server's CLI parses, and its memory estimate reads the
model folder."""

import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from engines import transformers as adapter
from engines.adapter import EngineAdapter
from engines.spec import LaunchPlan, ModelSpec
from engines.transformers_server.__main__ import parse_args

MODELS = Path(__file__).resolve().parents[2] / "models"


def spec(path: str = "/m/dream", **options) -> ModelSpec:
    return ModelSpec(engine="transformers", path=path, served_name="dream", options=options)


def test_it_is_an_engine_adapter():
    assert isinstance(adapter, EngineAdapter)
    assert adapter.NAME == "transformers" and adapter.READY_PATHS == ("/health", "/v1/models")


def test_argv_is_what_the_server_parses():
    argv = adapter.build_command(spec(diffusion_steps=64, trust_remote_code=True, max_queue=2, threads=4), 8003,
                                 ["--log-level", "DEBUG"])
    assert argv[:3] == [sys.executable, "-m", "engines.transformers_server"]
    args = parse_args(argv[3:])
    assert (str(args.model), args.port, args.served_model_name, args.max_queue) == ("/m/dream", 8003, "dream", 2)
    assert (args.diffusion_steps, args.diffusion_alg, args.trust_remote_code, args.threads) == (64, "entropy", True, 4)
    assert args.log_level == "DEBUG"


def test_binary_is_the_python_that_runs_it():
    """An own environment (e.g. transformers 4.51 for Dream's remote code) is the engine's `binary` setting."""
    assert adapter.build_command(spec(), 8003, [], "/opt/dream-env/bin/python")[0] == "/opt/dream-env/bin/python"


@pytest.mark.parametrize("options", [{"max_queue": "8"}, {"diffusion_alg": "greedy"}, {"dtype": "int8"},
                                     {"trust_remote_code": 1}, {"steps": 4}])
def test_options_are_strict(options):
    with pytest.raises(ValidationError):
        adapter.Options(**options)


@pytest.mark.parametrize("folder, working", [("tiny-llama-a", "KV cache"), ("tiny-dream-standin", "logits"),
                                             ("tiny-diffusion-gemma", "logits")])
def test_memory_estimate_reads_the_folder(folder, working):
    path = MODELS / folder
    if not (path / "config.json").is_file():
        pytest.skip(f"models/{folder} not built: run scripts/build_tiny_models.py")
    plan = LaunchPlan(spec=spec(str(path)), port=8003, argv=adapter.build_command(spec(str(path)), 8003, []), env={})
    estimate = adapter.estimate_memory(plan)
    assert estimate.weights_bytes == (path / "model.safetensors").stat().st_size
    assert estimate.total_bytes == estimate.weights_bytes + estimate.kv_cache_bytes + estimate.runtime_bytes
    assert working in estimate.basis
    wide = LaunchPlan(spec=spec(str(path), dtype="float32"), port=8003,
                      argv=adapter.build_command(spec(str(path), dtype="float32"), 8003, []), env={})
    assert adapter.estimate_memory(wide).weights_bytes == 2 * estimate.weights_bytes


def test_files_check():
    assert adapter.FILES.check_model(Path("/nonexistent")) is not None
    assert "config.json" in adapter.FILES.format_problem(Path(__file__).parent)
