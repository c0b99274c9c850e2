"""Engines get only what they need: no secrets from the environment, telemetry off and the hub offline, a
command line in the log without secret values, and state files only the owner can read."""

from __future__ import annotations

import os
import stat

import pytest

from engines import launcher
from engines.environment import QUIET, engine_environment, is_secret_name, redacted_argv
from engines.spec import LaunchPlan, ModelSpec, plan_file, write_plan

SHELL = {"PATH": "/usr/bin", "HOME": "/home/u", "ULLM_API_KEY": "k1", "ULLM_ADMIN_KEY": "k2", "HF_TOKEN": "hf_x",
         "HUGGING_FACE_HUB_TOKEN": "hf_y", "OPENAI_API_KEY": "sk", "AWS_SECRET_ACCESS_KEY": "a",
         "TOKENIZERS_PARALLELISM": "false", "VLLM_CPU_KVCACHE_SPACE": "1", "ULLM_HOME": "/srv/ullm"}


def test_secrets_are_left_out_of_the_engine_environment():
    env = engine_environment(SHELL, {})
    for name in ("ULLM_API_KEY", "ULLM_ADMIN_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "OPENAI_API_KEY",
                 "AWS_SECRET_ACCESS_KEY"):
        assert name not in env
    assert {k: env[k] for k in ("PATH", "HOME", "TOKENIZERS_PARALLELISM", "VLLM_CPU_KVCACHE_SPACE", "ULLM_HOME")} == {
        k: SHELL[k] for k in ("PATH", "HOME", "TOKENIZERS_PARALLELISM", "VLLM_CPU_KVCACHE_SPACE", "ULLM_HOME")}


def test_engines_run_without_telemetry_and_offline():
    env = engine_environment({"VLLM_NO_USAGE_STATS": "0", "HF_HUB_OFFLINE": "0"}, {})
    assert env["VLLM_NO_USAGE_STATS"] == env["DO_NOT_TRACK"] == env["HF_HUB_OFFLINE"] == "1"
    assert env["TRANSFORMERS_OFFLINE"] == "1"
    # models.yaml's engines.<engine>.env is the user's explicit choice and wins
    assert engine_environment({}, {"HF_HUB_OFFLINE": "0"})["HF_HUB_OFFLINE"] == "0"


@pytest.mark.parametrize("name, secret", [("ULLM_API_KEY", True), ("hf-token", True), ("api-key", True),
                                          ("DB_PASSWORD", True), ("tokenizer-mode", False),
                                          ("TOKENIZERS_PARALLELISM", False), ("max-num-batched-tokens", False),
                                          ("VLLM_CPU_KVCACHE_SPACE", False)])
def test_secret_names(name, secret):
    assert is_secret_name(name) is secret


def test_secret_flag_values_are_redacted_for_the_log():
    argv = ["/bin/llama-server", "-m", "/m/a.gguf", "--api-key", "s3cret", "--hf-token=hf_abc", "--tokenizer-mode",
            "mistral", "--port", "8002"]
    assert redacted_argv(argv) == ["/bin/llama-server", "-m", "/m/a.gguf", "--api-key", "***", "--hf-token=***",
                                   "--tokenizer-mode", "mistral", "--port", "8002"]


def test_the_launcher_execs_the_engine_with_the_clean_environment_and_logs_no_secret(tmp_path, monkeypatch, capsys):
    model = tmp_path / "a.gguf"
    model.write_bytes(b"GGUF")
    plan = LaunchPlan(spec=ModelSpec("llamacpp", str(model), "a"), port=8002,
                      argv=["/bin/true", "-m", str(model), "--api-key", "s3cret"], env={"LLAMA_ARG_X": "1"})
    write_plan(tmp_path, plan)
    monkeypatch.setenv("ULLM_RUN_DIR", str(tmp_path))
    for name, value in SHELL.items():
        monkeypatch.setenv(name, value)
    execs = []
    monkeypatch.setattr(os, "execve", lambda path, argv, env: execs.append((path, argv, env)))
    launcher.main(["llamacpp"])
    (path, argv, env), = execs
    assert argv == plan.argv  # the engine gets its real arguments
    assert "ULLM_API_KEY" not in env and "HF_TOKEN" not in env and QUIET.items() <= env.items()
    assert env["LLAMA_ARG_X"] == "1" and env["ULLM_ENGINE_TOKEN"]
    printed = capsys.readouterr().out
    assert "exec /bin/true" in printed and "s3cret" not in printed and "--api-key ***" in printed


def test_state_files_are_the_owners_alone(tmp_path):
    old = os.umask(0o022)
    try:
        write_plan(tmp_path / "run", LaunchPlan(spec=ModelSpec("vllm", "/m/a", "a"), port=1, argv=["x"],
                                                env={"SOME_TOKEN": "t"}))
    finally:
        os.umask(old)
    path = plan_file(tmp_path / "run", "vllm")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_a_model_that_is_not_on_disk_is_refused_with_a_clear_message(tmp_path):
    from engines.registry import ADAPTERS
    for adapter in ADAPTERS.values():
        problem = adapter.FILES.check_model(tmp_path / "Qwen3-0.6B")
        assert "does not exist" in problem and "scripts/download_model.py" in problem and "offline" in problem
