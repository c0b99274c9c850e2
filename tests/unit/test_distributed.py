"""One model across boxes on the engines' own runtimes (docs/distributed.md): the exact command lines and
environments of the head and of each worker, for llama.cpp's rpc and vLLM's mp and ray modes; the config of a
worker box; what the memory ledger counts; how /v1/status checks an rpc worker."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from engines import build, llamacpp, memory, vllm, vllm_distributed
from engines.registry import launch_plan
from engines.spec import ModelSpec
from router import distributed, worker
from router.config import ConfigError, parse_config
from router.worker_config import RpcWorkerSettings

MODELS = Path(__file__).resolve().parents[2] / "models"
PY = sys.executable


@pytest.fixture(autouse=True)
def cpu_only(monkeypatch):
    monkeypatch.setenv("ULLM_DEVICE", "cpu")
    monkeypatch.setenv("ULLM_MEMORY_POOL", "cpu")
    from engines.device import has_cuda_gpu
    has_cuda_gpu.cache_clear()
    memory.memory_pool.cache_clear()
    yield
    has_cuda_gpu.cache_clear()
    memory.memory_pool.cache_clear()


def on_gpu(monkeypatch):
    monkeypatch.setenv("ULLM_DEVICE", "cuda")
    from engines.device import has_cuda_gpu
    has_cuda_gpu.cache_clear()


def hf_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "big"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"max_position_embeddings": 4096}))
    return folder


# ---- llama.cpp rpc ------------------------------------------------------------------------------------------

def test_an_rpc_model_offloads_n_gpu_layers_to_its_workers_on_a_box_without_a_gpu(tmp_path):
    spec = ModelSpec("llamacpp", "/m/big.gguf", "big", {"rpc": ["10.0.0.2:50052"], "n_gpu_layers": 15})
    plan = launch_plan(spec, 8002, [], {}, str(tmp_path / "llama-server"))
    assert plan.argv == [str(tmp_path / "llama-server"), "-m", "/m/big.gguf", "--host", "127.0.0.1", "--port", "8002",
                         "-c", "8192", "--parallel", "4", "--alias", "big", "--metrics", "-ngl", "15",
                         "--rpc", "10.0.0.2:50052", "-lv", "4", *plan.argv[20:]]
    assert plan.argv[20:] in ([], ["--no-repack"])  # repack depends on the CPU (AMX)
    assert plan.env == {"GGML_NO_BACKTRACE": "1"}


def test_tensor_split_and_rpc_only_are_passed_in_llama_cpps_spelling(monkeypatch):
    on_gpu(monkeypatch)
    spec = ModelSpec("llamacpp", "/m/big.gguf", "big", {"rpc": ["10.0.0.2:50052", "10.0.0.3:50052"],
                                                         "tensor_split": [1, 1, 2], "rpc_only": True})
    argv = llamacpp.build_command(spec, 8002, [], "/bin/llama-server")
    tail = argv[argv.index("-ngl"):]
    assert tail[:10] == ["-ngl", "999", "--rpc", "10.0.0.2:50052,10.0.0.3:50052", "-lv", "4",
                         "--tensor-split", "1,1,2", "--device", "RPC0,RPC1"]


def test_a_model_without_workers_gets_no_rpc_flags_nor_environment(tmp_path):
    plan = launch_plan(ModelSpec("llamacpp", "/m/a.gguf", "a", {}), 8002, [], {}, "/bin/llama-server")
    assert not {"--rpc", "-ngl", "-lv", "--tensor-split"} & set(plan.argv) and plan.env == {}


@pytest.mark.parametrize("options, message", [
    ({"rpc": ["10.0.0.2"]}, "is not host:port"),
    ({"rpc": ["10.0.0.2:0"]}, "is not host:port"),
    ({"rpc": ["a:1,b:2"]}, "is not host:port"),
    ({"tensor_split": [1, 1]}, "need rpc workers"),
    ({"rpc_only": True}, "need rpc workers"),
    ({"rpc": ["h:1"], "tensor_split": [0, 0]}, "not all 0"),
    ({"rpc": ["h:1"], "tensor_split": [-1, 2]}, "proportions >= 0")])
def test_rpc_options_are_checked(options, message):
    with pytest.raises(ValidationError, match=message):
        llamacpp.Options(**options)


def test_this_boxs_share_is_what_the_workers_do_not_take(monkeypatch):
    # 30 layers + the output layer; on a box without a GPU the rest of n_gpu_layers stays on the CPU here
    assert llamacpp.local_share(llamacpp.Options(rpc=["h:1"], n_gpu_layers=15), 30) == pytest.approx(16 / 31)
    assert llamacpp.local_share(llamacpp.Options(rpc=["h:1"]), 30) == 0.0
    assert llamacpp.local_share(llamacpp.Options(), 30) == 1.0
    on_gpu(monkeypatch)  # the local GPU shares the offload: equally by default, else by tensor_split (workers first)
    assert llamacpp.local_share(llamacpp.Options(rpc=["h:1"]), 30) == pytest.approx(0.5)
    assert llamacpp.local_share(llamacpp.Options(rpc=["h:1"], tensor_split=[1, 3]), 30) == pytest.approx(0.75)
    assert llamacpp.local_share(llamacpp.Options(rpc=["h:1"], rpc_only=True), 30) == 0.0


@pytest.mark.skipif(not (MODELS / "tiny-llama-a.gguf").exists(), reason="models/ has no tiny GGUF: run "
                    "scripts/setup.sh (it builds the tiny models)")
def test_the_memory_ledger_counts_only_this_boxs_share_of_an_rpc_model():
    path = MODELS / "tiny-llama-a.gguf"  # 2 layers: -ngl 2 of 3 leaves a third here
    whole = llamacpp.estimate_memory(launch_plan(ModelSpec("llamacpp", str(path), "a", {"ctx_size": 2048}),
                                                 1, [], {}, "/bin/ls"))
    split = llamacpp.estimate_memory(launch_plan(
        ModelSpec("llamacpp", str(path), "a", {"ctx_size": 2048, "rpc": ["127.0.0.1:1"], "n_gpu_layers": 2}),
        1, [], {}, "/bin/ls"))
    assert split.weights_bytes == int(whole.weights_bytes / 3)
    assert split.kv_cache_bytes == int(whole.kv_cache_bytes / 3)
    assert split.basis.startswith("this box's share 33% (the rest on rpc workers 127.0.0.1:1)")


def test_the_build_makes_the_rpc_worker_beside_llama_server_with_rpc_on(tmp_path):
    (configure_step, configure), (_, compile_) = build.build_commands(tmp_path / "src", tmp_path / "b", False)
    assert "-DGGML_RPC=ON" in configure and compile_[compile_.index("--target") + 1:][:2] == [
        "llama-server", "ggml-rpc-server"]
    assert build.default_build_dir(False).name == "build-cpu-rpc"  # a cache built without RPC is not reused


def test_the_rpc_worker_is_found_beside_the_llama_server_in_use(tmp_path, monkeypatch):
    monkeypatch.delenv("LLAMA_RPC_SERVER_BIN", raising=False)
    (tmp_path / "ggml-rpc-server").write_text("")
    assert build.find_rpc_server(tmp_path / "llama-server") == tmp_path / "ggml-rpc-server"
    monkeypatch.setenv("LLAMA_RPC_SERVER_BIN", "/opt/x/ggml-rpc-server")
    assert build.find_rpc_server(tmp_path / "llama-server") == Path("/opt/x/ggml-rpc-server")


# ---- the rpc-worker program -----------------------------------------------------------------------------------

def test_the_rpc_worker_binds_loopback_by_default_and_says_why():
    settings = RpcWorkerSettings()
    assert worker.rpc_command(settings, "/b/ggml-rpc-server") == [
        "/b/ggml-rpc-server", "--host", "127.0.0.1", "--port", "50052"]
    assert "loopback, the default, so only this box can use it" in worker.why_this_address(settings)


def test_the_rpc_worker_on_the_link_with_its_cache_threads_and_devices():
    settings = RpcWorkerSettings(host="10.0.0.2", port=50100, cache=True, threads=8, devices=["CUDA0"])
    assert worker.rpc_command(settings, "rpc") == ["rpc", "--host", "10.0.0.2", "--port", "50100", "--cache",
                                                   "--threads", "8", "--device", "CUDA0"]
    assert "no authentication, so this must be an address on the direct link" in worker.why_this_address(settings)


def test_every_interface_is_bound_only_when_asked():
    for host in ("0.0.0.0", "::"):
        with pytest.raises(ValidationError, match="binds every interface.*allow_any_address"):
            RpcWorkerSettings(host=host)
    settings = RpcWorkerSettings(host="0.0.0.0", allow_any_address=True)
    assert "every interface, because allow_any_address is set" in worker.why_this_address(settings)
    with pytest.raises(ValidationError, match="is not an address"):
        RpcWorkerSettings(host="10.0.0.2; rm -rf /")


# ---- vLLM across boxes -------------------------------------------------------------------------------------------

MP_TWO_BOXES = {"tensor_parallel_size": 2, "nnodes": 2, "distributed_executor_backend": "mp",
                "master_addr": "192.168.100.10", "master_port": 29501, "link_interface": "enp1s0f1np1"}
RAY_TWO_BOXES = {"tensor_parallel_size": 2, "nnodes": 2, "distributed_executor_backend": "ray",
                 "ray_address": "192.168.100.10:6379", "link_interface": "enp1s0f1np1"}
LINK_ENV = {"NCCL_SOCKET_IFNAME": "enp1s0f1np1", "GLOO_SOCKET_IFNAME": "enp1s0f1np1",
            "UCX_NET_DEVICES": "enp1s0f1np1"}


def test_mp_across_two_boxes_head(tmp_path, monkeypatch):
    on_gpu(monkeypatch)
    folder = hf_dir(tmp_path)
    plan = launch_plan(ModelSpec("vllm", str(folder), "big", MP_TWO_BOXES), 8001, [], {})
    assert plan.argv == [PY, "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder),
                         "--host", "127.0.0.1", "--port", "8001", "--served-model-name", "big",
                         "--dtype", "bfloat16", "--max-model-len", "4096", "--gpu-memory-utilization", "0.9",
                         "--tensor-parallel-size", "2", "--distributed-executor-backend", "mp",
                         "--nnodes", "2", "--node-rank", "0", "--master-addr", "192.168.100.10",
                         "--master-port", "29501"]
    assert plan.env == {**LINK_ENV, "VLLM_HOST_IP": "192.168.100.10"}


def test_mp_across_two_boxes_worker(tmp_path, monkeypatch):
    on_gpu(monkeypatch)
    folder = hf_dir(tmp_path)
    spec = ModelSpec("vllm", str(folder), "big", MP_TWO_BOXES)
    opts = vllm.Options(**MP_TWO_BOXES)
    argv = vllm_distributed.worker_command(spec.path, vllm.model_args(spec, opts), opts, 1, python=PY)
    assert argv == [PY, "-m", "engines.vllm_headless", "--model", str(folder),
                    "--dtype", "bfloat16", "--max-model-len", "4096", "--gpu-memory-utilization", "0.9",
                    "--tensor-parallel-size", "2", "--distributed-executor-backend", "mp", "--headless",
                    "--nnodes", "2", "--node-rank", "1", "--master-addr", "192.168.100.10", "--master-port", "29501"]
    assert vllm_distributed.worker_env(opts, "192.168.100.11") == {**LINK_ENV, "VLLM_HOST_IP": "192.168.100.11"}


def test_ray_across_two_boxes_head_and_workers(tmp_path, monkeypatch):
    on_gpu(monkeypatch)
    folder = hf_dir(tmp_path)
    plan = launch_plan(ModelSpec("vllm", str(folder), "big", RAY_TWO_BOXES), 8001, [], {})
    assert plan.argv[-4:] == ["--tensor-parallel-size", "2", "--distributed-executor-backend", "ray"]
    assert "--nnodes" not in plan.argv  # Ray places the ranks on its cluster
    assert plan.env == {**LINK_ENV, "VLLM_HOST_IP": "192.168.100.10", "RAY_ADDRESS": "192.168.100.10:6379"}
    opts = vllm.Options(**RAY_TWO_BOXES)
    ray = str(Path(PY).parent / "ray")
    assert vllm_distributed.worker_command(str(folder), [], opts, 0, python=PY) == [
        ray, "start", "--head", "--node-ip-address", "192.168.100.10", "--port", "6379", "--block"]
    assert vllm_distributed.worker_command(str(folder), [], opts, 1, python=PY) == [
        ray, "start", "--address", "192.168.100.10:6379", "--block"]


def test_tensor_parallel_on_one_cpu_box_shares_the_cores_out(tmp_path, monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    folder = hf_dir(tmp_path)
    options = {"tensor_parallel_size": 2, "distributed_executor_backend": "mp"}
    plan = launch_plan(ModelSpec("vllm", str(folder), "tp2", options), 8001, [], {})
    assert plan.argv[-4:] == ["--tensor-parallel-size", "2", "--distributed-executor-backend", "mp"]
    assert plan.env == {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_CPU_OMP_THREADS_BIND": "0|1"}
    assert vllm_distributed.cpu_bind(2, cores=8) == {"VLLM_CPU_OMP_THREADS_BIND": "0-3|4-7"}
    # the settings' env wins over what the plan derives
    assert launch_plan(ModelSpec("vllm", str(folder), "tp2", options), 8001, [],
                       {"VLLM_CPU_OMP_THREADS_BIND": "nobind"}).env["VLLM_CPU_OMP_THREADS_BIND"] == "nobind"


def test_a_vllm_model_on_one_process_is_unchanged(tmp_path):
    plan = launch_plan(ModelSpec("vllm", str(hf_dir(tmp_path)), "m", {}), 8001, [], {})
    assert plan.env == {"VLLM_CPU_KVCACHE_SPACE": "1"} and "--tensor-parallel-size" not in plan.argv
    assert vllm.distributed(plan.spec) is None


@pytest.mark.parametrize("options, message", [
    ({"nnodes": 2, "tensor_parallel_size": 2}, "needs distributed_executor_backend"),
    ({"nnodes": 2, "tensor_parallel_size": 2, "distributed_executor_backend": "mp"}, "needs master_addr"),
    ({"nnodes": 2, "tensor_parallel_size": 3, "distributed_executor_backend": "mp", "master_addr": "h"},
     "must divide"),
    ({"distributed_executor_backend": "ray"}, "needs ray_address"),
    ({"ray_address": "h:6379"}, "needs distributed_executor_backend: ray"),
    ({"master_addr": "h"}, "for nnodes > 1"),
    ({**RAY_TWO_BOXES, "master_addr": "h"}, "for the mp backend")])
def test_distributed_vllm_options_are_checked(options, message):
    with pytest.raises(ValidationError, match=message):
        vllm.Options(**options)


def test_the_cpu_ledger_counts_a_kv_space_and_a_runtime_per_local_rank(tmp_path):
    folder = hf_dir(tmp_path)
    (folder / "model.safetensors").write_bytes(b"x" * 1000)
    options = {"tensor_parallel_size": 2, "distributed_executor_backend": "mp"}
    one = vllm.estimate_memory(launch_plan(ModelSpec("vllm", str(folder), "m", {}), 1, [], {}))
    two = vllm.estimate_memory(launch_plan(ModelSpec("vllm", str(folder), "m", options), 1, [], {}))
    assert (two.kv_cache_bytes, two.runtime_bytes, two.weights_bytes) == (
        2 * one.kv_cache_bytes, 2 * one.runtime_bytes, one.weights_bytes)
    across = vllm.estimate_memory(launch_plan(ModelSpec("vllm", str(folder), "m", {**MP_TWO_BOXES}), 1, [], {}))
    assert across.weights_bytes == one.weights_bytes // 2 and across.kv_cache_bytes == one.kv_cache_bytes


# ---- models.yaml's workers: and the vllm-worker program ---------------------------------------------------------

def catalog(options: dict, workers: str) -> str:
    return f"""
engines: {{vllm: {{port: 8001}}}}
models:
  big: {{engine: vllm, path: big, options: {json.dumps(options)}}}
{workers}
"""


def test_the_workers_section_defaults_to_a_loopback_rpc_worker_and_no_vllm_node():
    config = parse_config("engines: {llamacpp: {port: 8002}}")
    assert (config.workers.rpc.host, config.workers.rpc.port, config.workers.vllm) == ("127.0.0.1", 50052, None)
    with pytest.raises(ConfigError, match="workers.rpc.hots"):
        parse_config("engines: {llamacpp: {port: 8002}}\nworkers: {rpc: {hots: 10.0.0.2}}")


@pytest.mark.parametrize("workers, message", [
    ("workers: {vllm: {model: nope, node_rank: 1}}", "is not a vllm model of the catalog"),
    ("workers: {vllm: {model: big, node_rank: 0}}", "must be 1..1 with the mp backend"),
    ("workers: {vllm: {model: big, node_rank: 2}}", "must be 1..1 with the mp backend")])
def test_a_vllm_worker_names_a_model_that_spans_boxes_and_a_rank_it_has(workers, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(catalog(MP_TWO_BOXES, workers))
    with pytest.raises(ConfigError, match="does not span boxes"):
        parse_config(catalog({}, "workers: {vllm: {model: big, node_rank: 1}}"))


def test_the_vllm_worker_program_runs_the_catalog_entrys_own_plan(tmp_path, monkeypatch, capsys):
    on_gpu(monkeypatch)
    (tmp_path / "models").mkdir()
    hf_dir(tmp_path / "models")
    config = parse_config(catalog(MP_TWO_BOXES, "workers: {vllm: {model: big, node_rank: 1, host_ip: 192.168.100.11, "
                                                "env: {NCCL_DEBUG: INFO}}}"))
    monkeypatch.setenv("ULLM_HOME", str(tmp_path))
    argv, env = worker.vllm_program(config)
    assert argv[argv.index("--model") + 1] == str(tmp_path / "models" / "big")
    assert argv[argv.index("--headless"):] == ["--headless", "--nnodes", "2", "--node-rank", "1",
                                               "--master-addr", "192.168.100.10", "--master-port", "29501"]
    assert env == {**LINK_ENV, "VLLM_HOST_IP": "192.168.100.11", "NCCL_DEBUG": "INFO"}
    assert "big from" in capsys.readouterr().out


def test_the_vllm_worker_program_without_a_plan_says_so(monkeypatch, capsys):
    with pytest.raises(SystemExit) as exit_:
        worker.vllm_program(parse_config("engines: {vllm: {port: 8001}}"))
    assert exit_.value.code == 2 and "no workers.vllm section" in capsys.readouterr().out


# ---- /v1/status: whether each rpc worker answers --------------------------------------------------------------

def test_a_worker_answers_when_it_accepts_a_connection_and_not_when_nothing_listens():
    async def scenario():
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            dead = closed.getsockname()[1]  # bound, not listening: refused
            found = await distributed.rpc_workers([f"127.0.0.1:{port}", f"127.0.0.1:{dead}"], None)
        server.close()
        return found
    up, down = asyncio.run(scenario())
    assert up == {"address": up["address"], "answers": True, "how": "a TCP connection opened"}
    assert down["answers"] is False and down["how"].startswith("no connection: ConnectionRefusedError")


def test_the_metrics_say_whether_each_rpc_worker_of_a_served_model_answers_and_forget_the_others():
    from types import SimpleNamespace

    from router.engine_state import State
    from router.metrics import RouterMetrics

    def engines(options: dict, state: State = State.LOADED) -> dict:
        spec = ModelSpec("llamacpp", "/m/a.gguf", "a", options)
        instance = SimpleNamespace(name="llamacpp-1", state=state, details=SimpleNamespace(spec=spec, process=None))
        return {"llamacpp": SimpleNamespace(instances=[instance])}

    async def scenario() -> list[dict]:
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            two = {"rpc": [f"127.0.0.1:{port}", f"127.0.0.1:{closed.getsockname()[1]}"]}
            seen = [await distributed.rpc_worker_answers(engines(two)),
                    await distributed.rpc_worker_answers(engines(two, State.IDLE)),
                    await distributed.rpc_worker_answers(engines({}))]
        server.close()
        return seen
    served, idle, alone = asyncio.run(scenario())
    assert served == {("llamacpp-1", "0"): True, ("llamacpp-1", "1"): False}
    assert idle == alone == {}
    metrics = RouterMetrics()

    def up(worker: str) -> float | None:
        return metrics.registry.get_sample_value("unified_rpc_worker_up", {"engine": "llamacpp-1", "worker": worker})
    metrics.rpc_workers_seen(served)
    assert (up("0"), up("1")) == (1, 0)
    metrics.rpc_workers_seen(alone)  # the model went: no series that says its workers are up or down
    assert (up("0"), up("1")) == (None, None)


def test_a_worker_the_engine_is_connected_to_is_not_probed():
    """ggml-rpc-server serves one client at a time with a backlog of 1: probes would queue behind the engine."""
    import os
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)  # nobody accepts: a probe would wait in the backlog
        port = listener.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)):  # this process plays the engine holding its connection
            found = asyncio.run(distributed.rpc_workers([f"localhost:{port}"], os.getpid()))
    assert found == [{"address": f"localhost:{port}", "answers": True, "how": "the engine holds a connection to it"}]


def test_status_hides_the_boxes_addresses_from_readers_without_the_admin_key():
    found = {"runtime": "llama.cpp rpc", "rpc_workers": [{"address": "10.0.0.2:50052", "answers": True, "how": "x"}],
             "master_addr": None}
    distributed._without_addresses(found)
    assert found["rpc_workers"] == [{"address": "worker 0", "answers": True, "how": None}]
    found = {"runtime": "vllm mp", "master_addr": "10.0.0.1", "ray_address": None}
    distributed._without_addresses(found)
    assert found == {"runtime": "vllm mp", "master_addr": "(admin only)", "ray_address": None}


def test_the_adapters_say_how_a_model_spans_boxes(tmp_path):
    rpc = ModelSpec("llamacpp", "/m/a.gguf", "a", {"rpc": ["10.0.0.2:50052"], "tensor_split": [1, 1]})
    assert llamacpp.distributed(rpc) == {"runtime": "llama.cpp rpc", "rpc_workers": ["10.0.0.2:50052"],
                                         "tensor_split": [1, 1], "n_gpu_layers": 999, "rpc_only": False}
    assert vllm.distributed(ModelSpec("vllm", str(tmp_path), "big", MP_TWO_BOXES)) == {
        "runtime": "vllm mp", "tensor_parallel_size": 2, "pipeline_parallel_size": 1, "nnodes": 2,
        "master_addr": "192.168.100.10", "ray_address": None}


# ---- failures quote the line that says why ------------------------------------------------------------------------

class LogOnly:
    def __init__(self, text: str):
        self.text = text

    async def tail_log(self, name: str, nbytes: int = 4096) -> str:
        return self.text[-nbytes:]


def test_a_dead_ranks_line_is_quoted_above_the_shutdown_noise_that_follows_it(tmp_path):
    from router.engine_process import LOG_LINES_IN_ERRORS, EngineProcess
    died = ("(EngineCore pid=1) ERROR [multiproc_executor.py:315] Worker proc VllmWorker-1 died unexpectedly "
            "(exit code: -9), shutting down executor.")
    noise = [f"(EngineCore pid=1) ERROR [core.py:1512]   traceback line {i} " + "x" * 150 for i in range(80)]
    log = "\n".join(["INFO: serving", died, *noise]) + "\n"
    proc = EngineProcess("vllm", LogOnly(log), tmp_path, vllm.READY_PATHS, reason_lines=vllm.REASON_LINES)
    tail = asyncio.run(proc.log_tail()).splitlines()
    assert tail == [died, "...", *noise[-LOG_LINES_IN_ERRORS:]]
    # without the pattern, only the last lines; a reason among the last lines is not quoted twice
    plain = EngineProcess("vllm", LogOnly(log), tmp_path, vllm.READY_PATHS)
    assert asyncio.run(plain.log_tail()).splitlines() == noise[-LOG_LINES_IN_ERRORS:]
    lost = ("(EngineCore pid=1) ERROR [core.py:1512] RuntimeError: Worker failed with error '[gloo/transport/tcp/"
            "pair.cc:553] Connection closed by peer [10.0.0.2]:32462.'")  # a rank on another box went away
    proc = EngineProcess("vllm", LogOnly("\n".join([lost, *noise])), tmp_path, vllm.READY_PATHS,
                         reason_lines=vllm.REASON_LINES)
    assert asyncio.run(proc.log_tail()).splitlines()[0] == lost
    short = EngineProcess("llamacpp", LogOnly("a\nggml-rpc.cpp:547: Failed to connect to 10.0.0.2:50052\n"),
                          tmp_path, llamacpp.READY_PATHS, reason_lines=llamacpp.REASON_LINES)
    assert asyncio.run(short.log_tail()) == "a\nggml-rpc.cpp:547: Failed to connect to 10.0.0.2:50052"


def test_every_workers_setting_is_documented():
    """docs/configuration.md has a row per key of `workers:` (`rpc.host`, `vllm.model`...)."""
    import re

    from engines.spec import PROJECT_HOME
    from router.worker_config import RpcWorkerSettings, VllmWorkerSettings
    rows = set(re.findall(r"^\| `([\w.]+)` \|", (PROJECT_HOME / "docs" / "configuration.md").read_text(), re.M))
    keys = {f"rpc.{k}" for k in RpcWorkerSettings.model_fields} | {f"vllm.{k}" for k in VllmWorkerSettings.model_fields}
    assert keys <= rows, f"docs/configuration.md does not document {sorted(keys - rows)}"


# ---- a head over several boxes waits for the others to join -------------------------------------------------------

# vLLM 0.32's own lines (CPU build, nnodes 2, mp) from tests/e2e/test_distributed_vllm.py's head
LAUNCH = "[launcher] vllm: launch plan 3f2a\n[launcher] vllm: exec python -m vllm.entrypoints.openai.api_server ...\n"
JOINING = ("(Worker pid=5100) INFO 12-06 06:03:39 [parallel_state.py:1906] world_size=2 rank=0 local_rank=0 "
           "distributed_init_method=tcp://127.0.0.1:45199 backend=gloo\n")
JOINED = ("(Worker pid=5100) INFO 12-06 06:03:39 [parallel_state.py:2350] rank 0 in world size 2 is assigned as DP "
          "rank 0, PP rank 0, PCP rank 0, TP rank 0, ETP rank 0, EP rank N/A, EPLB rank N/A\n")
LOADING = "(Worker_TP0 pid=5100) INFO 12-06 06:03:39 [cpu_model_runner.py:68] Starting to load model /m/big...\n"
WAITING = ("the other 1 box to join: the vllm-worker program with node_rank 1, which reaches this head at "
           "192.168.100.10:29501")


def test_a_head_over_two_boxes_waits_for_the_other_from_its_ranks_first_line_until_all_have_joined(tmp_path):
    spec = ModelSpec("vllm", str(tmp_path), "big", MP_TWO_BOXES)
    assert vllm.waiting_on(spec, LAUNCH) is None  # not at the rendezvous yet: nothing known
    assert vllm.waiting_on(spec, LAUNCH + JOINING) == WAITING
    assert vllm.waiting_on(spec, LAUNCH + JOINING + JOINED + LOADING) is None
    three = ModelSpec("vllm", str(tmp_path), "big", {**MP_TWO_BOXES, "tensor_parallel_size": 3, "nnodes": 3})
    assert vllm.waiting_on(three, LAUNCH + JOINING).startswith(
        "the other 2 boxes to join: the vllm-worker program with node_ranks 1 to 2,")
    for one_box in ({"tensor_parallel_size": 2, "distributed_executor_backend": "mp"}, RAY_TWO_BOXES):
        assert vllm.waiting_on(ModelSpec("vllm", str(tmp_path), "big", one_box), LAUNCH + JOINING) is None
    assert llamacpp.waiting_on(ModelSpec("llamacpp", "/m/a.gguf", "a", {"rpc": ["10.0.0.2:50052"]}), JOINING) is None


class LoadingHead(LogOnly):
    """supervisord for a head that runs and never answers: its log, an earlier launch that waited included."""

    async def info(self, name: str):
        from router.supervisor import ProcessInfo
        return ProcessInfo(name, "RUNNING", 4242, 0, 0, "", "")


def test_a_load_that_times_out_says_the_other_boxes_never_joined(tmp_path):
    from router.engine_process import EngineProcess
    from router.errors import LOG_LINES_MARK, LoadFailed
    spec = ModelSpec("vllm", str(tmp_path), "big", MP_TWO_BOXES)

    async def never_ready(base_url: str) -> bool:
        return False

    def load(log: str) -> str:
        proc = EngineProcess("vllm", LoadingHead(log), tmp_path, vllm.READY_PATHS, probe=never_ready)
        with pytest.raises(LoadFailed) as failed:
            asyncio.run(proc.wait_ready("http://127.0.0.1:1", 0.05, lambda info: None,
                                        lambda text: vllm.waiting_on(spec, text)))
        return str(failed.value)
    assert load(LAUNCH + JOINING).startswith(f"engine vllm did not become ready within 0 s: it was still waiting "
                                             f"for {WAITING}{LOG_LINES_MARK}")
    # the boxes joined, or an earlier launch's wait: only the plain timeout
    for log in (LAUNCH + JOINING + JOINED + LOADING, LAUNCH + JOINING + LAUNCH + LOADING):
        assert load(log).startswith(f"engine vllm did not become ready within 0 s{LOG_LINES_MARK}"), load(log)


def test_status_shows_what_a_loading_head_waits_for_and_hides_its_address_from_readers_without_the_admin_key(
        tmp_path):
    spec = ModelSpec("vllm", str(tmp_path), "big", MP_TWO_BOXES)

    async def recent_log() -> str:
        return JOINING
    found = asyncio.run(distributed.report(spec, None, recent_log))
    assert found["waiting_for"] == WAITING
    assert asyncio.run(distributed.report(spec, None))["waiting_for"] is None  # not loading: not read
    distributed._without_addresses(found)
    assert found["waiting_for"].endswith("reaches this head at (admin only):29501")
    assert found["master_addr"] == "(admin only)"
