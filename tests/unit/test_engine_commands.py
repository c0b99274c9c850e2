"""Model spec → engine command line, with the quirks each engine needs."""

import json
import re
import subprocess

import pytest
from pydantic import ValidationError

from engines import llamacpp, vllm
from engines.spec import ModelSpec


@pytest.fixture(autouse=True)
def cpu_only(monkeypatch):
    monkeypatch.setenv("ULLM_DEVICE", "cpu")
    from engines.device import has_cuda_gpu
    has_cuda_gpu.cache_clear()
    yield
    has_cuda_gpu.cache_clear()


def hf_dir(tmp_path, **config):
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


def test_vllm_argv_binds_loopback_and_names_the_model(tmp_path):
    spec = ModelSpec("vllm", str(hf_dir(tmp_path, max_position_embeddings=32768)), "my-model", {})
    argv = vllm.build_command(spec, 9001, ["--max-num-seqs", "4"])
    assert argv[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    joined = " ".join(argv)
    assert "--host 127.0.0.1 --port 9001" in joined
    assert "--served-model-name my-model" in joined
    assert "--dtype bfloat16" in joined and "--max-model-len 8192" in joined
    assert "--gpu-memory-utilization" not in joined  # CPU build has no such budget
    assert argv[-2:] == ["--max-num-seqs", "4"]


def test_vllm_max_model_len_is_capped_by_the_model(tmp_path):
    spec = ModelSpec("vllm", str(hf_dir(tmp_path, max_position_embeddings=2048)), "m", {"max_model_len": 8192})
    argv = vllm.build_command(spec, 1, [])
    assert argv[argv.index("--max-model-len") + 1] == "2048"


def test_vllm_gpu_gets_memory_utilization(tmp_path, monkeypatch):
    monkeypatch.setenv("ULLM_DEVICE", "cuda")
    from engines.device import has_cuda_gpu
    has_cuda_gpu.cache_clear()
    spec = ModelSpec("vllm", str(hf_dir(tmp_path)), "m", {"gpu_memory_utilization": 0.5})
    argv = vllm.build_command(spec, 1, [])
    assert argv[argv.index("--gpu-memory-utilization") + 1] == "0.5"


def test_mistral_format_folder_gets_mistral_flags(tmp_path):
    (tmp_path / "params.json").write_text(json.dumps({"max_seq_len": 32768}))
    (tmp_path / "consolidated.safetensors").write_bytes(b"")
    argv = vllm.build_command(ModelSpec("vllm", str(tmp_path), "mistral", {}), 1, [])
    joined = " ".join(argv)
    assert "--tokenizer-mode mistral --config-format mistral --load-format mistral" in joined


def test_plain_hf_folder_gets_no_mistral_flags(tmp_path):
    argv = vllm.build_command(ModelSpec("vllm", str(hf_dir(tmp_path)), "m", {}), 1, [])
    assert "--tokenizer-mode" not in argv


def test_llamacpp_argv(tmp_path):
    spec = ModelSpec("llamacpp", str(tmp_path / "m.gguf"), "m", {"ctx_size": 4096, "parallel": 8})
    argv = llamacpp.build_command(spec, 9002, [], tmp_path / "llama-server")
    joined = " ".join(argv)
    assert argv[0] == str(tmp_path / "llama-server")
    assert f"-m {tmp_path / 'm.gguf'}" in joined
    assert "--host 127.0.0.1 --port 9002" in joined
    assert "-c 4096" in joined and "--parallel 8" in joined and "--alias m" in joined and "--metrics" in joined
    assert "-ngl" not in argv


@pytest.mark.parametrize("options", [{"dtype": "int3"}, {"gpu_memory_utilization": 1.5},
                                     {"max_model_len": -1}, {"max_model_len": "8192; rm -rf /"},
                                     {"tensor_parallel_size": 0}, {"quantization": "awq"}, {"nnodes": 2},
                                     {"distributed_executor_backend": "ray"}, {"master_addr": "10.0.0.1"}])
def test_vllm_options_are_typed_and_range_checked(options):
    with pytest.raises(ValidationError):
        vllm.Options(**options)


def test_llamacpp_maps_by_default(tmp_path):
    argv = llamacpp.build_command(ModelSpec("llamacpp", str(tmp_path / "m.gguf"), "m", {}), 1, [], tmp_path / "ls")
    assert "--load-mode" not in argv and "--no-mmap" not in argv
    assert llamacpp.build_command(ModelSpec("llamacpp", str(tmp_path / "m.gguf"), "m", {"mmap": True}), 1, [],
                                  tmp_path / "ls") == argv


def test_llamacpp_mmap_false_reads_the_model_without_mapping_it(tmp_path):
    spec = ModelSpec("llamacpp", str(tmp_path / "m.gguf"), "m", {"mmap": False, "ctx_size": 4096})
    argv = llamacpp.build_command(spec, 9002, ["--threads", "4"], tmp_path / "llama-server")
    # the pinned llama-server spells --no-mmap `--load-mode none` (and rejects --no-mmap)
    assert argv[argv.index("--load-mode") + 1] == "none" and argv.count("--load-mode") == 1
    assert argv[-2:] == ["--threads", "4"]  # extra_args still come last


@pytest.mark.parametrize("amx,repack,expected", [(False, None, False), (True, None, True), (True, True, False),
                                                  (False, False, True)])
def test_llamacpp_repacks_unless_the_cpu_has_amx(tmp_path, monkeypatch, amx, repack, expected):
    """The pinned llama.cpp's AMX kernels segfault at the first quantized matmul on an AMX CPU (this CI machine
    kind): there, repacking is off unless the catalog turns it on."""
    monkeypatch.setattr(llamacpp, "cpu_has_amx", lambda: amx)
    options = {} if repack is None else {"repack": repack}
    argv = llamacpp.build_command(ModelSpec("llamacpp", str(tmp_path / "m.gguf"), "m", options), 1, [], tmp_path)
    assert ("--no-repack" in argv) is expected


def test_vllm_is_compiled_unless_a_model_asks_for_eager(tmp_path):
    def eager(**options) -> bool:
        return "--enforce-eager" in vllm.build_command(ModelSpec("vllm", str(hf_dir(tmp_path)), "m", options), 1, [])
    assert not eager() and eager(enforce_eager=True) and not eager(enforce_eager=False)


def test_every_llamacpp_flag_is_one_the_pinned_llama_server_knows(tmp_path, monkeypatch):
    """The flags build_command emits, with every option set, against the built binary's own --help."""
    from engines import build
    binary = build.find_binary(None)
    assert binary.is_file(), f"no llama-server at {binary}: run ./scripts/setup.sh"
    helptext = subprocess.run([str(binary), "--help"], capture_output=True, text=True, timeout=60).stdout
    known = set(re.findall(r"(?<![\w-])(--?[a-z][a-z0-9-]*)", helptext))
    monkeypatch.setenv("ULLM_DEVICE", "cuda")  # -ngl too (a CPU build still knows the flag)
    from engines.device import has_cuda_gpu
    has_cuda_gpu.cache_clear()
    options = {"ctx_size": 4096, "parallel": 2, "n_gpu_layers": 10, "mmap": False, "repack": False}
    argv = llamacpp.build_command(ModelSpec("llamacpp", str(tmp_path / "m.gguf"), "m", options), 1, [], binary)
    flags = [arg for arg in argv[1:] if arg.startswith("-") and not arg.lstrip("-").isdigit()]
    assert flags and not [flag for flag in flags if flag not in known], helptext[-2000:]


@pytest.mark.parametrize("options", [{"ctx_size": 0}, {"parallel": 0}, {"n_gpu_layers": "all"}, {"threads": 4},
                                     {"mmap": "false"}, {"mmap": 0}, {"repack": "no"}])
def test_llamacpp_options_are_typed_and_range_checked(options):
    with pytest.raises(ValidationError):
        llamacpp.Options(**options)


def test_a_vllm_diffusion_model_gets_its_diffusion_config_and_the_v2_model_runner(tmp_path):
    options = {"diffusion_canvas_length": 256, "diffusion_max_denoising_steps": 48}
    spec = ModelSpec("vllm", str(hf_dir(tmp_path, model_type="diffusion_gemma")), "dgemma", options)
    argv = vllm.build_command(spec, 9001, [])
    at = argv.index("--diffusion-config")
    assert json.loads(argv[at + 1]) == {"canvas_length": 256, "max_denoising_steps": 48}
    assert vllm.spec_env(spec) == {"VLLM_USE_V2_MODEL_RUNNER": "1"}
    plain = ModelSpec("vllm", str(tmp_path), "m", {})
    assert "--diffusion-config" not in vllm.build_command(plain, 9001, []) and vllm.spec_env(plain) == {}
    canvas_only = ModelSpec("vllm", str(tmp_path), "m", {"diffusion_canvas_length": 32})
    assert json.loads(vllm.build_command(canvas_only, 9001, [])[-1]) == {"canvas_length": 32}
    with pytest.raises(ValidationError, match="needs diffusion_canvas_length"):
        vllm.Options(diffusion_max_denoising_steps=8)
