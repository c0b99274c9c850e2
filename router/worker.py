"""What supervisord runs for this box's worker programs, from models.yaml's `workers:` section
(router/worker_config.py, docs/distributed.md):

  python -m router.worker rpc    llama.cpp's ggml-rpc-server, lending this box's devices to a llama-server
  python -m router.worker vllm   this box's node of a vLLM model that spans boxes (a headless vLLM, or Ray)

Each prints what it runs and why it binds where it does, then `exec`s it (supervisord's PID is the worker's).
The router does not start these: a worker box runs them (`supervisorctl start rpc-worker`) and its router, if it
runs one, serves nothing of the shared model. Exit codes: 2 = nothing configured, 78 = bad config,
127 = binary missing.
"""

from __future__ import annotations

import os
import sys

from engines import build, vllm, vllm_distributed
from engines.environment import engine_environment, redacted_argv
from router.config import Config, ConfigError, load_config
from router.errors import ApiError
from router.models import resolve_spec
from router.worker_config import ANY_ADDRESS, RpcWorkerSettings

KINDS = ("rpc", "vllm")


def fail(kind: str, message: str, code: int) -> None:
    print(f"[worker] {kind}: {message}", flush=True)
    sys.exit(code)


def rpc_binary(config: Config) -> str:
    settings = config.workers.rpc
    llamacpp = config.engines.get("llamacpp")
    return settings.binary or str(build.find_rpc_server(build.find_binary(llamacpp.binary if llamacpp else None)))


def rpc_command(settings: RpcWorkerSettings, binary: str) -> list[str]:
    argv = [binary, "--host", settings.host, "--port", str(settings.port)]
    if settings.cache:
        argv.append("--cache")
    if settings.threads:
        argv += ["--threads", str(settings.threads)]
    if settings.devices:
        argv += ["--device", ",".join(settings.devices)]
    return argv


def why_this_address(settings: RpcWorkerSettings) -> str:
    where = f"{settings.host or '::'}:{settings.port} (workers.rpc.host)"
    if settings.host in ANY_ADDRESS:
        return (f"binding {where}: every interface, because allow_any_address is set. llama.cpp's RPC protocol has "
                "no authentication: whoever reaches this port can use this box's devices and memory; keep it "
                "behind a firewall that admits only the head box")
    if settings.host in ("127.0.0.1", "::1", "localhost"):
        return (f"binding {where}: loopback, the default, so only this box can use it; on a worker box set "
                "workers.rpc.host to its address on the link between the boxes")
    return (f"binding {where}: llama.cpp's RPC protocol has no authentication, so this must be an address on "
            "the direct link between the boxes, never one a wider network reaches")


def rpc_program(config: Config) -> tuple[list[str], dict[str, str]]:
    settings = config.workers.rpc
    argv = rpc_command(settings, rpc_binary(config))
    if not os.access(argv[0], os.X_OK):
        fail("rpc", f"{argv[0]} is not an executable: scripts/setup.sh builds ggml-rpc-server beside llama-server "
                    "(or set workers.rpc.binary / LLAMA_RPC_SERVER_BIN)", 127)
    print(f"[worker] rpc: {why_this_address(settings)}", flush=True)
    if settings.cache:
        print("[worker] rpc: tensor cache on (-c): $LLAMA_CACHE/rpc, else ~/.cache/llama.cpp/rpc", flush=True)
    return argv, {}


def vllm_program(config: Config) -> tuple[list[str], dict[str, str]]:
    worker = config.workers.vllm
    if worker is None:
        fail("vllm", "models.yaml has no workers.vllm section: nothing to run on this box", 2)
    try:
        spec = resolve_spec(config, worker.model, "vllm", {})
    except ApiError as exc:
        fail("vllm", f"workers.vllm.model {worker.model!r}: {exc}", 78)
    opts = vllm.Options(**spec.options)
    argv = vllm_distributed.worker_command(spec.path, vllm.model_args(spec, opts), opts, worker.node_rank)
    if not os.access(argv[0], os.X_OK):
        fail("vllm", f"{argv[0]} is not an executable (the ray backend needs `pip install ray` in the venv)", 127)
    settings = config.engines.get("vllm")
    env = {**vllm.default_env(), **vllm_distributed.worker_env(opts, worker.host_ip),
           **(settings.env if settings else {}), **worker.env}
    role = ("the Ray head" if opts.distributed_executor_backend == "ray" and worker.node_rank == 0
            else f"node {worker.node_rank} of {max(opts.nnodes, 2)}")
    print(f"[worker] vllm: {spec.served_name} from {spec.path}, {role}", flush=True)
    return argv, env


def main(args: list[str]) -> None:
    if len(args) != 1 or args[0] not in KINDS:
        print(f"usage: python -m router.worker {{{'|'.join(KINDS)}}}", file=sys.stderr)
        sys.exit(64)
    kind = args[0]
    try:
        config = load_config()
    except ConfigError as exc:
        fail(kind, str(exc), 78)
    argv, env = rpc_program(config) if kind == "rpc" else vllm_program(config)
    print(f"[worker] {kind}: exec {' '.join(redacted_argv(argv))}", flush=True)
    os.execve(argv[0], argv, engine_environment(os.environ, env))


if __name__ == "__main__":
    main(sys.argv[1:])
