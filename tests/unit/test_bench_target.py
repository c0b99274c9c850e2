"""What benchmark_full.py loads and how it treats earlier results: options, llama.cpp slots, prompts, resume."""

import json
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
sys.path.insert(0, str(SCRIPTS))
import benchmark_full  # noqa: E402
from bench.prompts import DEFAULT, Prompts  # noqa: E402
from bench.target import folder_name, llamacpp_slots, parse_options  # noqa: E402


def test_options_are_typed():
    assert parse_options(["ctx_size=8192", "gpu_memory_utilization=0.85", "dtype=float16", "flag=true"]) == \
        {"ctx_size": 8192, "gpu_memory_utilization": 0.85, "dtype": "float16", "flag": True}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_options(["ctx_size"])


def test_llamacpp_gets_one_slot_per_stream_with_room_for_the_longest_answer():
    assert llamacpp_slots({}, [64, 1024], [4, 64], 256) == {"parallel": 64, "ctx_size": 64 * (1024 + 512)}
    assert llamacpp_slots({"n_gpu_layers": 99}, [16, 32], [], 256) == \
        {"n_gpu_layers": 99, "parallel": 1, "ctx_size": 32 + 512}
    assert llamacpp_slots({"parallel": 8}, [1024], [64], 256) == {"parallel": 8}  # the user's choice stays


def test_folder_names_are_safe():
    assert folder_name("Qwen/Qwen3-0.6B") == "Qwen_Qwen3-0.6B"
    assert folder_name("../../etc") == "etc" and folder_name("..") == "model"


def test_prompts_skip_comments_and_repeat(tmp_path):
    japanese = Prompts(DEFAULT)
    assert len(japanese) >= 10 and all(any("\u3040" <= ch <= "\u30ff" for ch in p) for p in japanese.lines)
    path = tmp_path / "p.txt"
    path.write_text("# comment\n\nfirst\nsecond\n")
    prompts = Prompts(path)
    assert prompts.lines == ["first", "second"] and prompts[2] == "first"
    path.write_text("# only a comment\n")
    with pytest.raises(ValueError, match="has no prompts"):
        Prompts(path)


def test_earlier_results_are_resumed_only_when_measured_alike(tmp_path):
    settings = {"model": "m", "engine": "vllm", "api": "chat", "temperature": 0.7}
    assert benchmark_full.prepare(tmp_path, settings, fresh=False) == {}
    (tmp_path / "summary.json").write_text(json.dumps({"settings": settings, "started_at": "t0"}))
    (tmp_path / "single_stream.csv").write_text("rows\n")
    assert benchmark_full.prepare(tmp_path, settings, fresh=False)["started_at"] == "t0"
    with pytest.raises(ValueError, match=r"measured differently \(temperature: 0.7 → 0.0\)"):
        benchmark_full.prepare(tmp_path, {**settings, "temperature": 0.0}, fresh=False)
    assert benchmark_full.prepare(tmp_path, {**settings, "temperature": 0.0}, fresh=True) == {}
    assert not (tmp_path / "single_stream.csv").exists()
