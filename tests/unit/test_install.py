"""The installer's check that a cached llama-server really runs (a cache copied from another build folder
keeps a RUNPATH that points nowhere: the file exists and is executable, but cannot start)."""

import importlib.util
import os
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "install.py"


@pytest.fixture(scope="module")
def install():
    spec = importlib.util.spec_from_file_location("install", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_program(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return path


def test_a_binary_that_answers_version_runs(install, tmp_path):
    assert install.runs(make_program(tmp_path / "ok", 'test "$1" = --version && echo "version: 1" && exit 0; exit 9'))


def test_a_binary_whose_libraries_are_missing_does_not_run(install, tmp_path):
    # what the dynamic loader does when a shared library is not found: message on stderr, status 127
    broken = make_program(tmp_path / "broken", "echo 'error while loading shared libraries' >&2; exit 127")
    assert not install.runs(broken)


def test_missing_or_non_executable_files_do_not_run(install, tmp_path):
    assert not install.runs(tmp_path / "absent")
    plain = tmp_path / "plain"
    plain.write_text("not a program")
    assert not install.runs(plain)


def test_the_installer_builds_llama_server_with_the_shared_build_code(install, tmp_path, monkeypatch):
    """scripts/setup.sh and the Docker image (`python3 -m engines.build`) run the same commands: both come
    from engines/build.py's build_commands (tests/unit/test_deployment.py checks the image's side)."""
    from engines import build
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("LLAMA_SERVER_BIN", raising=False)
    monkeypatch.setenv("ULLM_DEVICE", "cpu")
    build.has_cuda_gpu.cache_clear()
    ran = []
    monkeypatch.setattr(install, "run_logged", lambda cmd, log, what, fix, env=None: ran.append((what, cmd, log)))
    try:
        install.step_llama_server(tmp_path / "src", cuda=False)
    finally:
        build.has_cuda_gpu.cache_clear()
    expected = build.build_commands(tmp_path / "src", build.default_build_dir(False), False)
    assert [(what, cmd) for what, cmd, _ in ran] == expected
    assert [log for *_, log in ran] == ["setup-llama-cmake.log", "setup-llama-build.log"]  # logs as before
    cli = []
    monkeypatch.setattr(build, "fetch_source", lambda say: tmp_path / "src")
    assert build.main(["--device", "cpu"], run=lambda step, cmd: cli.append((step, cmd))) == 0
    bench = (build.BENCH_COMPILE, build.bench_command(build.default_build_dir(False)))
    assert cli == [*expected, bench]  # the image builds llama-bench too, in the same folder
    cli.clear()
    assert build.main(["--device", "cpu", "--no-llama-bench"], run=lambda step, cmd: cli.append((step, cmd))) == 0
    assert cli == expected


def test_a_cache_without_the_rpc_worker_is_built_again_once_and_one_with_it_is_kept(install, tmp_path, monkeypatch):
    """An old cache (built before RPC) lives in build-cpu and is not looked at; a build-cpu-rpc whose
    ggml-rpc-server is missing is configured and compiled again in place (not thrown away: its llama-server runs)."""
    from engines import build
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("LLAMA_SERVER_BIN", raising=False)
    monkeypatch.setenv("ULLM_DEVICE", "cpu")
    build.has_cuda_gpu.cache_clear()
    ran = []
    monkeypatch.setattr(install, "run_logged", lambda cmd, log, what, fix, env=None: ran.append(what))
    try:
        old = build.cache_dir() / "build-cpu" / "bin" / "llama-server"  # a cache from before RPC
        old.parent.mkdir(parents=True)
        make_program(old, 'test "$1" = --version && exit 0; exit 9')
        binary = build.default_binary()
        assert binary.parent.parent.name == "build-cpu-rpc"
        binary.parent.mkdir(parents=True)
        make_program(binary, 'test "$1" = --version && exit 0; exit 9')
        install.step_llama_server(tmp_path / "src", cuda=False)
        assert ran == [build.CONFIGURE, build.COMPILE] and binary.exists()  # rebuilt in place: the worker was missing
        make_program(binary.parent / build.RPC_SERVER, "exit 1")
        ran.clear()
        install.step_llama_server(tmp_path / "src", cuda=False)
        assert ran == []  # both there: cached
    finally:
        build.has_cuda_gpu.cache_clear()


def test_llama_bench_is_one_more_target_of_the_same_build_folder(install, tmp_path, monkeypatch):
    """No configure step (its flags are llama-server's, unchanged); skipped when the cached binary runs."""
    from engines import build
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("LLAMA_SERVER_BIN", raising=False)
    monkeypatch.delenv("LLAMA_BENCH_BIN", raising=False)
    monkeypatch.setenv("ULLM_DEVICE", "cpu")
    build.has_cuda_gpu.cache_clear()
    ran = []
    monkeypatch.setattr(install, "run_logged", lambda cmd, log, what, fix, env=None: ran.append((what, cmd, log)))
    try:
        build_dir = build.default_build_dir(False)
        install.step_llama_bench(cuda=False)
        assert ran == []  # no configured build folder: nothing to add a target to
        build_dir.mkdir(parents=True)
        (build_dir / "build.ninja").write_text("")
        install.step_llama_bench(cuda=False)
        assert ran == [(build.BENCH_COMPILE, ["cmake", "--build", str(build_dir), "--target", "llama-bench",
                                              f"-j{os.cpu_count()}"], "setup-llama-bench.log")]
        assert build.default_llama_bench() == build_dir / "bin" / "llama-bench"
        build.default_llama_bench().parent.mkdir()
        make_program(build.default_llama_bench(), 'test "$1" = --version && exit 0; exit 9')
        ran.clear()
        install.step_llama_bench(cuda=False)
        assert ran == []  # cached and runs
    finally:
        build.has_cuda_gpu.cache_clear()


def test_llama_bench_is_found_by_variable_then_beside_llama_server_then_in_the_cache(tmp_path, monkeypatch):
    from engines import build
    monkeypatch.delenv("LLAMA_BENCH_BIN", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    server = tmp_path / "opt" / "llama-server"
    assert build.find_llama_bench(server) == build.default_llama_bench()
    server.parent.mkdir()
    (server.parent / "llama-bench").write_text("")
    assert build.find_llama_bench(server) == server.parent / "llama-bench"
    monkeypatch.setenv("LLAMA_BENCH_BIN", "/somewhere/llama-bench")
    assert build.find_llama_bench(server) == Path("/somewhere/llama-bench")


def test_a_cuda_build_takes_the_architecture_only_when_asked(tmp_path):
    from engines import build
    plain = build.build_commands(tmp_path, tmp_path / "b", True)[0][1]
    assert "-DGGML_CUDA=ON" in plain and not [a for a in plain if "CMAKE_CUDA_ARCHITECTURES" in a]
    gb10 = build.build_commands(tmp_path, tmp_path / "b", True, "121a-real")[0][1]
    assert gb10[-1] == "-DCMAKE_CUDA_ARCHITECTURES=121a-real"
    cpu = build.build_commands(tmp_path, tmp_path / "b", False, "121a-real")[0][1]
    assert "-DGGML_CUDA=ON" not in cpu and not [a for a in cpu if "CUDA" in a]


def test_the_dream_environment_sees_the_system_packages_when_the_project_venv_does(install, tmp_path):
    """The CUDA image's venv takes NVIDIA's torch from the system's site-packages; .venv-dream must too."""
    (tmp_path / "pyvenv.cfg").write_text("home = /usr/bin\ninclude-system-site-packages = true\nversion = 3.12\n")
    assert install.uses_system_packages(tmp_path)
    (tmp_path / "pyvenv.cfg").write_text("home = /usr/bin\ninclude-system-site-packages = false\n")
    assert not install.uses_system_packages(tmp_path)
    assert not install.uses_system_packages(tmp_path / "missing")
