"""vLLM over several GPUs or boxes on its own runtime: from one model's options, the head's flags and environment
and each other box's program (docs/distributed.md). The head is the engine the router runs and talks to;
another box runs the `vllm-worker` program (router/worker.py) with the command `worker_command` builds from the
same catalog entry, so both ends come from one plan.

- mp backend: the head runs `--nnodes N --node-rank 0 --master-addr A`; node k runs vLLM `--headless
  --node-rank k` with the same model flags (engines/vllm_headless.py: vLLM's own headless entry).
- ray backend: every box runs the vllm-worker program, node 0 the Ray head (`ray start --head`), the others
  `ray start --address ray_address`; the head's vLLM finds the cluster through RAY_ADDRESS.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

from engines.device import has_cuda_gpu

DEFAULT_RAY_PORT = 6379
# vLLM's log around its ranks' rendezvous (vllm/distributed/parallel_state.py): each rank writes the first line as
# it starts to join the group, the second once every rank on every box has joined
RANK_JOINING = re.compile(r"world_size=\d+ rank=\d+ local_rank=\d+ distributed_init_method=")
RANKS_JOINED = re.compile(r"rank \d+ in world size \d+ is assigned as")


def ranks(opts: Any) -> int:
    return opts.tensor_parallel_size * opts.pipeline_parallel_size


def parallel_args(opts: Any) -> list[str]:
    argv: list[str] = []
    if opts.tensor_parallel_size > 1:
        argv += ["--tensor-parallel-size", str(opts.tensor_parallel_size)]
    if opts.pipeline_parallel_size > 1:
        argv += ["--pipeline-parallel-size", str(opts.pipeline_parallel_size)]
    if opts.distributed_executor_backend:
        argv += ["--distributed-executor-backend", opts.distributed_executor_backend]
    return argv


def node_args(opts: Any, node_rank: int) -> list[str]:
    """vLLM's own multi-node launch (mp backend): which node this is and where the head listens."""
    argv = ["--nnodes", str(opts.nnodes), "--node-rank", str(node_rank), "--master-addr", opts.master_addr]
    return argv + (["--master-port", str(opts.master_port)] if opts.master_port else [])


def spans_boxes(opts: Any) -> bool:
    return opts.nnodes > 1 or opts.distributed_executor_backend == "ray"


def head_args(opts: Any) -> list[str]:
    argv = parallel_args(opts)
    if opts.nnodes > 1 and opts.distributed_executor_backend == "mp":
        argv += node_args(opts, 0)
    return argv


def link_env(opts: Any, host_ip: str | None) -> dict[str, str]:
    """NVIDIA's two-box recipe: NCCL, Gloo and UCX held to the link's interface, VLLM_HOST_IP this box's address
    on it (else each picks the first interface it finds, often the wrong one)."""
    env = {}
    if opts.link_interface:
        env |= {"NCCL_SOCKET_IFNAME": opts.link_interface, "GLOO_SOCKET_IFNAME": opts.link_interface,
                "UCX_NET_DEVICES": opts.link_interface}
    if host_ip:
        env["VLLM_HOST_IP"] = host_ip
    return env


def cpu_bind(local_ranks: int, cores: int | None = None) -> dict[str, str]:
    """The CPU build binds each rank's OpenMP threads to cores; its `auto` gives rank N the N-th NUMA node, which
    a one-socket box has not: share the cores out instead (`0|1` for 2 ranks on 2 cores)."""
    cores = cores or os.cpu_count() or 1
    if has_cuda_gpu() or local_ranks < 2 or cores < local_ranks:
        return {}
    per = cores // local_ranks
    lists = [f"{r * per}-{r * per + per - 1}" if per > 1 else str(r) for r in range(local_ranks)]
    return {"VLLM_CPU_OMP_THREADS_BIND": "|".join(lists)}


def head_env(opts: Any) -> dict[str, str]:
    env = cpu_bind(ranks(opts) // opts.nnodes)
    if not spans_boxes(opts):
        return env
    head_ip = opts.master_addr or (opts.ray_address or "").rpartition(":")[0] or None
    env |= link_env(opts, head_ip)
    if opts.distributed_executor_backend == "ray":
        env["RAY_ADDRESS"] = opts.ray_address
    return env


def worker_command(model_path: str, model_args: list[str], opts: Any, node_rank: int,
                   python: str = sys.executable) -> list[str]:
    """The program of node `node_rank` (mp: 1..nnodes-1; ray: 0 is the Ray head, the others join it)."""
    if opts.distributed_executor_backend == "ray":
        ray = str(Path(python).parent / "ray")
        host, _, port = opts.ray_address.rpartition(":")
        if node_rank == 0:
            return [ray, "start", "--head", "--node-ip-address", host, "--port", port or str(DEFAULT_RAY_PORT),
                    "--block"]
        return [ray, "start", "--address", opts.ray_address, "--block"]
    return [python, "-m", "engines.vllm_headless", "--model", model_path, *model_args, *parallel_args(opts),
            "--headless", *node_args(opts, node_rank)]


def worker_env(opts: Any, host_ip: str | None) -> dict[str, str]:
    return cpu_bind(ranks(opts) // opts.nnodes) | link_env(opts, host_ip)


def waiting_on(opts: Any, log: str) -> str | None:
    """What a head over several boxes (mp backend) waits for, from its log since the launch: the other boxes, once
    its ranks have begun the rendezvous and until every rank has joined; otherwise None (nothing known)."""
    if opts.nnodes < 2 or opts.distributed_executor_backend != "mp":
        return None
    joining = [m.start() for m in RANK_JOINING.finditer(log)]
    joined = [m.start() for m in RANKS_JOINED.finditer(log)]
    if not joining or (joined and joined[-1] > joining[-1]):
        return None
    others = opts.nnodes - 1
    ranks_there = "node_rank 1" if others == 1 else f"node_ranks 1 to {others}"
    port = f":{opts.master_port}" if opts.master_port else ""
    return (f"the other {others} box{'es' if others > 1 else ''} to join: the vllm-worker program with "
            f"{ranks_there}, which reaches this head at {opts.master_addr}{port}")
