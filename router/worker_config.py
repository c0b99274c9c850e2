"""models.yaml's `workers:` section: what this box runs as a worker of a model that spans two boxes
(docs/distributed.md). The `rpc-worker` and `vllm-worker` programs of supervisord.conf read it (router/worker.py);
the router itself does not use it."""

from __future__ import annotations

import ipaddress

from engines import vllm
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# the addresses that bind every interface of the box: an rpc-server there is open to every network it is on
ANY_ADDRESS = ("0.0.0.0", "::", "")
DEFAULT_RPC_PORT = 50052


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RpcWorkerSettings(_Strict):
    """llama.cpp's ggml-rpc-server: lends this box's devices to a llama-server on another box (`rpc:` of a
    catalog model there). Its protocol has no authentication and no encryption: bind it to the link between the
    boxes only."""
    host: str = "127.0.0.1"  # loopback: this box only. Set it to this box's address on the link between the boxes
    port: int = Field(DEFAULT_RPC_PORT, ge=1, le=65535)
    allow_any_address: bool = False  # needed to bind 0.0.0.0 / :: (every interface, every network)
    cache: bool = False  # -c: keep large tensors in a local file cache, so a reload does not send them again
    threads: int | None = Field(None, ge=1, le=1024)  # CPU device threads (rpc-server's default: its own choice)
    devices: list[str] = []  # -d: which of this box's devices to lend (e.g. [CUDA0]); empty: all of them
    binary: str | None = None  # the ggml-rpc-server to run; else the one beside the llama-server build in use

    @field_validator("host")
    @classmethod
    def _address(cls, host: str) -> str:
        if host not in ANY_ADDRESS and not host.replace("-", "").replace(".", "").isalnum():
            try:
                ipaddress.ip_address(host)
            except ValueError as exc:
                raise ValueError(f"{host!r} is not an address or host name") from exc
        return host

    @model_validator(mode="after")
    def _exposure(self) -> "RpcWorkerSettings":
        if self.host in ANY_ADDRESS and not self.allow_any_address:
            raise ValueError(f"host {self.host!r} binds every interface, and llama.cpp's RPC protocol is "
                             "insecure (no authentication): bind the address of the link between the boxes, or "
                             "set allow_any_address: true if that is really wanted")
        return self


class VllmWorkerSettings(_Strict):
    """This box's part of a catalog model that spans boxes (vLLM `nnodes` > 1, or the ray backend): the same
    models.yaml entry as on the head, so both ends come from one plan."""
    model: str  # the catalog name (a vllm model with nnodes > 1 or distributed_executor_backend: ray)
    node_rank: int = Field(ge=0, le=63)  # mp: 1..nnodes-1 (0 is the head); ray: 0 runs the Ray head, others join
    host_ip: str | None = None  # this box's address on the link (VLLM_HOST_IP)
    env: dict[str, str] = {}  # extra environment, over what the plan sets


class WorkerSettings(_Strict):
    rpc: RpcWorkerSettings = RpcWorkerSettings()
    vllm: VllmWorkerSettings | None = None


def check_vllm_worker(workers: WorkerSettings, models: dict) -> None:
    """The vllm worker names a catalog model that spans boxes, with a node rank it has. ValueError if not."""
    worker = workers.vllm
    if worker is None:
        return
    entry = models.get(worker.model)
    if entry is None or entry.engine != vllm.NAME:
        raise ValueError(f"workers.vllm.model {worker.model!r} is not a vllm model of the catalog")
    opts = vllm.Options(**entry.options)
    if opts.distributed_executor_backend == "ray":
        if worker.node_rank >= max(opts.nnodes, 2):
            raise ValueError(f"workers.vllm.node_rank {worker.node_rank}: the model spans {opts.nnodes} box(es)")
        return
    if opts.nnodes < 2:
        raise ValueError(f"workers.vllm.model {worker.model!r} does not span boxes (set nnodes > 1 and "
                         "distributed_executor_backend)")
    if not 1 <= worker.node_rank < opts.nnodes:
        raise ValueError(f"workers.vllm.node_rank must be 1..{opts.nnodes - 1} with the mp backend "
                         "(node 0 is the head, which the router runs)")
