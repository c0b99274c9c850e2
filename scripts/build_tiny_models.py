#!/usr/bin/env python3
"""Build tiny random-weight test models, offline and deterministically.

Per Llama variant: <models-dir>/<name>/ (Hugging Face format, for vLLM) and <name>.gguf
(for llama-server, via llama.cpp's converter). Then the Transformers engine's tiny models
(tiny_transformers_models.py): Hugging Face folders only. Up-to-date models are skipped.
"""
import argparse
import contextlib
import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

BUILD_VERSION = 2  # bump whenever the build recipe changes
SCRIPT_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = SCRIPT_DIR.parent
CORPUS_PATH = SCRIPT_DIR / "tiny_corpus.txt"

VARIANTS = {"tiny-llama-a": 1, "tiny-llama-b": 2}  # name -> torch seed
VOCAB_SIZE = 2000
ARCH = {  # head_dim 64: vLLM's CPU attention rejects smaller heads
    "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
    "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 64,
    "max_position_embeddings": 4096, "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
}
# Plain Jinja that both HF/vLLM (jinja2) and llama.cpp render. The leading bos_token
# yields one BOS on both: vLLM tokenizes chat prompts without special tokens and
# llama-server strips a rendered BOS before adding its own.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + eos_token + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)
# legacy=True: HF then adds a "▁" after special tokens exactly like llama.cpp's SPM
# tokenizer, so both engines see identical chat-prompt token ids.
TOKENIZER_CONFIG = {
    "tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>",
    "unk_token": "<unk>", "pad_token": None, "add_bos_token": True, "add_eos_token": False,
    "legacy": True, "clean_up_tokenization_spaces": False,
    "model_max_length": ARCH["max_position_embeddings"], "chat_template": CHAT_TEMPLATE,
}
START = time.monotonic()
sys.path.insert(0, str(SCRIPT_DIR))
import tiny_transformers_models  # noqa: E402


class BuildError(Exception):
    pass


def log(msg: str) -> None:
    print(f"[{time.monotonic() - START:6.1f}s] {msg}", flush=True)


@contextlib.contextmanager
def step(label: str):
    """Log a step with its duration; turn any failure into a BuildError naming the step."""
    start = time.monotonic()
    try:
        yield
    except Exception as exc:
        detail = exc if isinstance(exc, BuildError) else f"{type(exc).__name__}: {exc}"
        raise BuildError(f"{label} failed: {detail}") from exc
    log(f"{label} ({time.monotonic() - start:.1f}s)")


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def fingerprint(seed: int) -> str:
    corpus_sha = hashlib.sha256(CORPUS_PATH.read_bytes()).hexdigest()
    recipe = {"version": BUILD_VERSION, "seed": seed, "arch": ARCH, "vocab": VOCAB_SIZE,
              "tokenizer": TOKENIZER_CONFIG, "corpus": corpus_sha}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def is_up_to_date(model_dir: Path, gguf_path: Path, fp: str) -> bool:
    try:
        info = json.loads((model_dir / "build-info.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (info.get("fingerprint") == fp and gguf_path.is_file()
            and (model_dir / "model.safetensors").is_file())


@functools.cache
def train_tokenizer() -> bytes:
    """Train SentencePiece BPE on the committed corpus; returns the model bytes. Iterator
    in, buffer out: no file paths end up in the proto, so the output is byte-identical."""
    import io
    import sentencepiece as spm

    lines = [ln for ln in CORPUS_PATH.read_text(encoding="utf-8").splitlines() if ln.strip()]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=buf, model_type="bpe",
        vocab_size=VOCAB_SIZE, byte_fallback=True, character_coverage=1.0,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1, minloglevel=2,
        # Llama-style: no normalisation, keep whitespace runs (HF/llama.cpp don't normalise)
        normalization_rule_name="identity", remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True, split_digits=True)
    return buf.getvalue()


def write_tokenizer(out: Path) -> None:
    from transformers import AutoTokenizer

    (out / "tokenizer.model").write_bytes(train_tokenizer())
    write_json(out / "tokenizer_config.json", TOKENIZER_CONFIG)
    tok = AutoTokenizer.from_pretrained(out)  # converts tokenizer.model -> fast tokenizer
    if len(tok) != VOCAB_SIZE:
        raise BuildError(f"tokenizer has {len(tok)} tokens, expected {VOCAB_SIZE}")
    tok.backend_tokenizer.save(str(out / "tokenizer.json"))  # so loaders skip the conversion


def write_weights(out: Path, seed: int) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB_SIZE, **ARCH)).to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    write_json(out / "generation_config.json", {"bos_token_id": 1, "eos_token_id": 2})
    for f in out.iterdir():  # transformers may write 0600 files; keep them world-readable
        f.chmod(0o644)


def convert_to_gguf(hf_dir: Path, gguf_path: Path, name: str, llama_src: Path) -> None:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PYTHONPATH=os.pathsep.join(
        p for p in (str(llama_src / "gguf-py"), os.environ.get("PYTHONPATH")) if p))
    cmd = [sys.executable, str(llama_src / "convert_hf_to_gguf.py"), str(hf_dir),
           "--outtype", "bf16", "--outfile", str(gguf_path), "--model-name", name]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if res.returncode != 0 or not gguf_path.is_file():
        tail = "\n".join((res.stdout + res.stderr).splitlines()[-20:])
        raise BuildError(f"convert_hf_to_gguf.py exited {res.returncode}:\n{tail}")


def transformers_fingerprint(name: str, recipe: dict) -> str:
    corpus_sha = hashlib.sha256(CORPUS_PATH.read_bytes()).hexdigest()
    data = {"version": BUILD_VERSION, "name": name, "recipe": recipe, "tokenizer": TOKENIZER_CONFIG,
            "corpus": corpus_sha}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def build_transformers_model(name: str, fp: str, models_dir: Path) -> None:
    """The tiny Llama's tokenizer, then the model's own weights and files; installed like a Llama variant."""
    staging = models_dir / f".{name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        with step(f"{name}: tokenizer"):
            write_tokenizer(staging)
        with step(f"{name}: weights"):
            tiny_transformers_models.WRITERS[name](staging)
        for f in staging.iterdir():
            f.chmod(0o644)
        write_json(staging / "build-info.json", {"name": name, "build_version": BUILD_VERSION, "fingerprint": fp})
        final_dir = models_dir / name
        shutil.rmtree(final_dir, ignore_errors=True)
        staging.rename(final_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def build_variant(name: str, seed: int, fp: str, models_dir: Path, llama_src: Path) -> None:
    # Build in a staging dir named like the model (the converter derives metadata from
    # it), then move into place; build-info.json is written last and marks completion.
    staging = models_dir / f".{name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    hf_dir, gguf_path = staging / name, staging / f"{name}.gguf"
    hf_dir.mkdir(parents=True)
    try:
        with step(f"{name}: tokenizer"):
            write_tokenizer(hf_dir)
        with step(f"{name}: weights (seed {seed})"):
            write_weights(hf_dir, seed)
        with step(f"{name}: gguf"):
            convert_to_gguf(hf_dir, gguf_path, name, llama_src)
        write_json(hf_dir / "build-info.json",
                   {"name": name, "seed": seed, "build_version": BUILD_VERSION, "fingerprint": fp})
        with step(f"{name}: install"):
            final_dir, final_gguf = models_dir / name, models_dir / f"{name}.gguf"
            shutil.rmtree(final_dir, ignore_errors=True)
            final_gguf.unlink(missing_ok=True)
            gguf_path.rename(final_gguf)
            hf_dir.rename(final_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def check_llama_src(llama_src: str | None) -> Path:
    path = Path(llama_src).expanduser().resolve() if llama_src else None
    if path and (path / "convert_hf_to_gguf.py").is_file() and (path / "gguf-py").is_dir():
        return path
    where = f"not found at {path} (needs convert_hf_to_gguf.py, gguf-py/)" if path else "not given"
    raise BuildError(f"llama.cpp source tree {where}; run the setup script, "
                     "or pass --llama-cpp-src / set ULLM_LLAMA_CPP_SRC")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, default=PROJECT_ROOT / "models",
                        help="output directory (default: %(default)s)")
    parser.add_argument("--llama-cpp-src", default=os.environ.get("ULLM_LLAMA_CPP_SRC"),
                        help="llama.cpp source tree (default: $ULLM_LLAMA_CPP_SRC)")
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    args = parser.parse_args(argv)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

    models_dir = args.models_dir.expanduser().resolve()
    try:
        todo = {}
        for name, seed in VARIANTS.items():
            fp = fingerprint(seed)
            if not args.force and is_up_to_date(models_dir / name, models_dir / f"{name}.gguf", fp):
                log(f"{name}: up to date, skipped")
            else:
                todo[name] = (seed, fp)
        if todo:
            llama_src = check_llama_src(args.llama_cpp_src)
            models_dir.mkdir(parents=True, exist_ok=True)
            for name, (seed, fp) in todo.items():
                build_variant(name, seed, fp, models_dir, llama_src)
        for name, recipe in tiny_transformers_models.recipes().items():
            fp = transformers_fingerprint(name, recipe)
            if not args.force and is_up_to_date(models_dir / name, models_dir / name / "config.json", fp):
                log(f"{name}: up to date, skipped")
                continue
            models_dir.mkdir(parents=True, exist_ok=True)
            build_transformers_model(name, fp, models_dir)
            todo[name] = (None, fp)
    except (BuildError, OSError) as exc:  # OSError: e.g. unreadable corpus or models dir
        print(f"build_tiny_models: error: {exc}", file=sys.stderr)
        return 1
    log(f"done: {len(todo)} built, {len(VARIANTS) + len(tiny_transformers_models.WRITERS) - len(todo)} skipped, in {models_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
