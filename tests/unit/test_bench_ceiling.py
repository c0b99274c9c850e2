"""Bytes read per decoded token and the ceiling (scripts/bench/ceiling.py), against hand-computed cases on
files written here: GGUFs with the `gguf` package (dense, tied, mixture of experts, sliding window,
recurrent layers, MLA, split), safetensors folders with a config.json."""

import json
import struct
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from bench import ceiling  # noqa: E402
from bench.ceiling import Limit  # noqa: E402


def f32(*shape):
    return np.zeros(shape, dtype=np.float32)


def write_gguf(path: Path, arch: str, meta: dict, tensors: dict[str, np.ndarray]) -> Path:
    """A GGUF of `arch` with `meta` ({key without the arch prefix: value}) and `tensors`. Every size chosen is
    a multiple of 32 bytes (the default alignment), so each tensor's size in the file is exactly its bytes."""
    writer = gguf.GGUFWriter(str(path), arch)
    for key, value in meta.items():
        full = key if key.startswith(("general.", "split.")) else f"{arch}.{key}"
        if isinstance(value, list):
            writer.add_array(full, value)
        else:
            writer.add_uint32(full, value)
    for name, array in tensors.items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


DENSE = {"block_count": 2, "attention.head_count": 4, "attention.head_count_kv": 2, "embedding_length": 64,
         "context_length": 4096}
# head_dim 64 / 4 = 16: per layer 2 kv heads × (16 + 16) × 2 bytes = 128 bytes per token of context
KV_PER_TOKEN = 2 * 128


def dense_tensors(output: bool) -> dict:
    tensors = {"token_embd.weight": f32(100, 64),  # 25,600 bytes, one row read per token when output exists
               "blk.0.attn_q.weight": f32(64, 64), "blk.1.attn_q.weight": f32(64, 64),  # 16,384 each
               "blk.0.attn_output.weight": f32(64, 64)}  # not the output layer
    if output:
        tensors["output.weight"] = np.zeros((100, 64), dtype=np.float16)  # 12,800
    return tensors


def test_dense_model_reads_every_weight_but_the_embedding_table(tmp_path):
    model = ceiling.from_gguf(write_gguf(tmp_path / "d.gguf", "llama", DENSE, dense_tensors(output=True)))
    assert model.weight_bytes == 25_600 + 3 * 16_384 + 12_800
    assert model.read_bytes == 3 * 16_384 + 12_800
    assert model.kv_bytes(1) == KV_PER_TOKEN and model.kv_bytes(1000) == 1000 * KV_PER_TOKEN
    assert model.bytes_per_token(1000) == 3 * 16_384 + 12_800 + 256_000
    assert (model.context_length, model.vocab_size, model.expert_count) == (4096, 100, None)


def test_tied_embeddings_are_read_whole_as_the_output_layer(tmp_path):
    model = ceiling.from_gguf(write_gguf(tmp_path / "t.gguf", "llama", DENSE, dense_tensors(output=False)))
    assert model.read_bytes == model.weight_bytes == 25_600 + 3 * 16_384


def test_mixture_of_experts_reads_the_shared_weights_and_the_active_experts_share(tmp_path):
    meta = {**DENSE, "expert_count": 8, "expert_used_count": 2}
    tensors = {"blk.0.attn_q.weight": f32(64, 64),  # 16,384
               "blk.0.ffn_up_exps.weight": f32(8, 32, 64),  # 65,536: 8 experts
               "blk.0.ffn_down_exps.weight": f32(8, 64, 32),  # 65,536
               "blk.0.ffn_up_shexp.weight": f32(32, 64)}  # 8,192: the shared expert, always active
    model = ceiling.from_gguf(write_gguf(tmp_path / "moe.gguf", "qwen3moe", meta, tensors))
    assert model.expert_bytes == 2 * 65_536 and (model.expert_count, model.experts_used) == (8, 2)
    assert model.read_bytes == 16_384 + 8_192 + 2 * 65_536 * 2 / 8


def test_kv_cache_at_depth_with_sliding_window_and_recurrent_layers(tmp_path):
    # gemma3: layer i slides when i % 6 < 5 (llama.cpp's pattern); 6 layers, window 128
    meta = {"block_count": 6, "attention.head_count": 2, "attention.head_count_kv": 1, "embedding_length": 64,
            "attention.key_length": 32, "attention.value_length": 32, "attention.sliding_window": 128}
    model = ceiling.from_gguf(write_gguf(tmp_path / "g.gguf", "gemma3", meta, {"blk.0.attn_q.weight": f32(64, 64)}))
    per = 1 * (32 + 32) * 2  # 128 bytes per token per layer
    assert [w for _, w in model.kv_layers] == [128] * 5 + [None]
    assert model.kv_bytes(100) == 6 * per * 100  # inside the window every layer grows
    assert model.kv_bytes(8192) == 5 * per * 128 + per * 8192
    # a hybrid: kv heads 0 on recurrent/convolution layers (lfm2), which cache nothing that grows
    hybrid = {**DENSE, "block_count": 4, "attention.head_count_kv": [0, 2, 0, 2]}
    model = ceiling.from_gguf(write_gguf(tmp_path / "h.gguf", "lfm2", hybrid, {"blk.0.attn_q.weight": f32(64, 64)}))
    assert len(model.kv_layers) == 2 and model.kv_bytes(10) == 2 * 128 * 10


def test_mla_caches_the_latent_and_the_rope_part_once(tmp_path):
    meta = {**DENSE, "attention.kv_lora_rank": 512, "rope.dimension_count": 64}
    path = write_gguf(tmp_path / "mla.gguf", "deepseek2", meta, {"blk.0.attn_q.weight": f32(64, 64)})
    model = ceiling.from_gguf(path)
    assert model.kv_bytes(1) == 2 * (512 + 64) * 2


def test_a_split_gguf_is_counted_whole_whichever_part_is_named(tmp_path):
    split = {"split.count": 2}
    write_gguf(tmp_path / "m-00001-of-00002.gguf", "llama", {**DENSE, **split, "split.no": 0},
               {"token_embd.weight": f32(100, 64), "blk.0.attn_q.weight": f32(64, 64)})
    write_gguf(tmp_path / "m-00002-of-00002.gguf", "llama", {**split, "split.no": 1},
               {"blk.1.attn_q.weight": f32(64, 64), "output.weight": np.zeros((100, 64), dtype=np.float16)})
    for part in ("m-00001-of-00002.gguf", "m-00002-of-00002.gguf"):
        model = ceiling.from_path(tmp_path / part)
        assert model.weight_bytes == 25_600 + 2 * 16_384 + 12_800
        assert model.read_bytes == 2 * 16_384 + 12_800  # the output is in part 2, the embedding in part 1
        assert model.kv_bytes(1) == KV_PER_TOKEN  # the metadata of part 1
        assert "split GGUF: 2 parts counted" in model.notes
    (tmp_path / "m-00002-of-00002.gguf").unlink()
    with pytest.raises(FileNotFoundError, match="missing parts m-00002-of-00002.gguf"):
        ceiling.from_path(tmp_path / "m-00001-of-00002.gguf")


def write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]]) -> None:
    """A .safetensors file whose header lists `tensors` ({name: (dtype, shape)}) with zeroed data."""
    header, offset = {}, 0
    for name, (dtype, shape) in tensors.items():
        size = int(np.prod(shape)) * ceiling.SIZES[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    data = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(data)) + data + bytes(offset))


def test_hugging_face_folder_moe_with_sliding_layers(tmp_path):
    config = {"num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
              "hidden_size": 32, "num_experts": 4, "num_experts_per_tok": 1, "max_position_embeddings": 2048,
              "vocab_size": 50, "sliding_window": 64, "layer_types": ["sliding_attention", "full_attention"]}
    (tmp_path / "config.json").write_text(json.dumps(config))
    write_safetensors(tmp_path / "model-00001-of-00002.safetensors", {
        "model.embed_tokens.weight": ("BF16", [50, 32]),  # 3,200: a lookup (lm_head exists)
        "model.layers.0.self_attn.q_proj.weight": ("BF16", [32, 32]),  # 2,048
        **{f"model.layers.0.mlp.experts.{e}.up_proj.weight": ("BF16", [16, 32]) for e in range(4)}})  # 1,024 each
    write_safetensors(tmp_path / "model-00002-of-00002.safetensors", {
        "model.layers.0.mlp.shared_expert.up_proj.weight": ("BF16", [16, 32]),  # 1,024, always read
        "lm_head.weight": ("F32", [50, 32]),  # 6,400
        "model.vision_tower.blocks.0.weight": ("F32", [64, 64])})  # not read for text tokens
    model = ceiling.from_path(tmp_path)
    assert model.source == "safetensors" and model.weight_bytes == 3_200 + 2_048 + 4 * 1_024 + 1_024 + 6_400
    assert model.expert_bytes == 4 * 1_024
    assert model.read_bytes == 2_048 + 1_024 * 4 / 4 + 1_024 + 6_400
    per = 2 * 2 * 8 * 2  # kv heads × (K + V) × head_dim × bytes: 64 per token per layer
    assert model.kv_layers == [(per, 64), (per, None)]
    assert model.kv_bytes(1000) == per * 64 + per * 1000
    assert (model.context_length, model.vocab_size) == (2048, 50)


def test_the_ceiling_is_bandwidth_over_bytes_per_token(tmp_path):
    model = ceiling.ModelBytes("gguf", 1_000_000, 1_000_000, kv_layers=[(100.0, None)] * 10)
    assert ceiling.ceiling(1e9, model, 0) == 1000.0  # 1 GB/s over 1 MB
    assert ceiling.ceiling(1e9, model, 1000) == 1e9 / (1_000_000 + 1_000 * 1_000)  # + 1 MB of KV cache
    # 4 streams share one read of the weights: 4 × 1e9 / (1 MB + 4 × 1 MB)
    assert Limit(1e9, model).tokens_per_s(1000, streams=4) == pytest.approx(4e9 / 5_000_000)
    assert ceiling.percent(50, 200) == 25 and ceiling.percent(None, 200) is None and ceiling.percent(5, 0) is None


def test_the_real_small_model_if_present():
    path = Path(__file__).resolve().parents[2] / "models" / "smollm2-135m-instruct-q4_1.gguf"
    if not path.exists():
        pytest.skip("the real small model is built by the setup")
    model = ceiling.from_path(path)
    # SmolLM2-135M: 30 layers × 3 kv heads × (64 + 64) × 2 bytes = 23,040 bytes per token of context; tied
    # embeddings (no output.weight), so every weight is read
    assert model.kv_bytes(1) == 23_040 and model.read_bytes == model.weight_bytes
    assert (model.context_length, model.vocab_size) == (8192, 49152)
