"""engines/gguf_header.py against the `gguf` package (the reference reader) on files the package writes."""

from pathlib import Path

import gguf
import numpy as np
import pytest

from engines import gguf_header

PROJECT = Path(__file__).resolve().parents[2]


def write(path: Path, endian: gguf.GGUFEndian) -> None:
    writer = gguf.GGUFWriter(str(path), "llama", endianess=endian)
    writer.add_block_count(3)
    writer.add_head_count(8)
    writer.add_head_count_kv([2, 4, 2])  # per layer, an array of integers
    writer.add_float32("test.f32", 0.25)
    writer.add_float64("test.f64", -1.5)
    writer.add_bool("test.flag", True)
    writer.add_int8("test.i8", -7)
    writer.add_uint64("test.u64", 2**40)
    writer.add_string("test.text", "こんにちは")
    writer.add_array("tokenizer.ggml.tokens", ["<s>", "</s>", "a", "日本"])
    writer.add_array("test.nested", [[1, 2], [3]])
    writer.add_tensor("tok_embd.weight", np.zeros((4, 16), dtype=np.float32))
    writer.add_tensor("blk.0.attn_q.weight", np.zeros((16, 16, 2), dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def reference(path: Path) -> tuple[dict, list]:
    reader = gguf.GGUFReader(path)
    metadata = {key: f.contents() for key, f in reader.fields.items() if not key.startswith("GGUF.")}
    tensors = [(t.name, tuple(int(d) for d in t.shape)) for t in reader.tensors]
    return metadata, tensors


@pytest.mark.parametrize("endian", [gguf.GGUFEndian.LITTLE, gguf.GGUFEndian.BIG], ids=["little", "big"])
def test_reads_what_the_gguf_package_reads(tmp_path, endian):
    path = tmp_path / "m.gguf"
    write(path, endian)
    header = gguf_header.read(path, tensors=True)
    metadata, tensors = reference(path)
    assert header.version == 3
    nested = header.metadata.pop("test.nested")
    assert nested == [[1, 2], [3]]  # (the package's contents() flattens arrays of arrays: compared apart)
    metadata.pop("test.nested")
    assert header.metadata == metadata  # the floats chosen are exact in float32
    assert header.metadata["test.text"] == "こんにちは"
    assert header.metadata["llama.attention.head_count_kv"] == [2, 4, 2]
    assert header.tensors == tensors == [("tok_embd.weight", (16, 4)), ("blk.0.attn_q.weight", (2, 16, 16))]
    assert header.parameters == 64 + 512


def test_keys_not_wanted_are_skipped_and_tensors_only_on_request(tmp_path):
    path = tmp_path / "m.gguf"
    write(path, gguf.GGUFEndian.LITTLE)
    header = gguf_header.read(path, want=lambda key: key.startswith("llama."))
    assert header.metadata == {"llama.block_count": 3, "llama.attention.head_count": 8,
                               "llama.attention.head_count_kv": [2, 4, 2]}
    assert header.tensors == []


@pytest.mark.parametrize("content, why", [(b"", "not a GGUF"), (b"GGUF\x01\x00\x00\x00", "version 1"),
                                          (b"GGUF\x03\x00\x00\x00\x00", "ends early"),
                                          (b"PK\x03\x04", "not a GGUF")])
def test_other_files_are_refused_clearly(tmp_path, content, why):
    path = tmp_path / "x.gguf"
    path.write_bytes(content)
    with pytest.raises(gguf_header.NotGGUF, match=why):
        gguf_header.read(path)


def test_a_truncated_header_is_refused(tmp_path):
    path = tmp_path / "m.gguf"
    write(path, gguf.GGUFEndian.LITTLE)
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(gguf_header.NotGGUF, match="ends early"):
        gguf_header.read(path, tensors=True)


@pytest.mark.skipif(not (PROJECT / "models" / "tiny-llama-a.gguf").exists(),
                    reason="the tiny GGUF is built by ./scripts/setup.sh")
def test_the_tiny_model_reads_the_same():
    path = PROJECT / "models" / "tiny-llama-a.gguf"
    header = gguf_header.read(path, tensors=True)
    metadata, tensors = reference(path)
    assert header.metadata == metadata and header.tensors == tensors


def test_tensor_sizes_from_the_offsets_match_the_package(tmp_path):
    """Each tensor's bytes in the file (any quantization type), padded to the alignment at most."""
    path = tmp_path / "m.gguf"
    write(path, gguf.GGUFEndian.LITTLE)
    paths = [path] + [PROJECT / "models" / name for name in ("tiny-llama-a.gguf", "smollm2-135m-instruct-q4_1.gguf")
                      if (PROJECT / "models" / name).exists()]
    for model in paths:
        sizes = gguf_header.read(model, want=lambda key: False, tensors=True).tensor_bytes()
        reference = {t.name: int(t.n_bytes) for t in gguf.GGUFReader(model).tensors}
        assert sizes.keys() == reference.keys()
        assert all(0 <= sizes[name] - reference[name] < 32 for name in sizes), model.name
    assert gguf_header.read(path, tensors=True).tensor_bytes() == {"tok_embd.weight": 256,
                                                                  "blk.0.attn_q.weight": 1024}
