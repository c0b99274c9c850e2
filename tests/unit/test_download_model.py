"""download_model.py without the network: the Hub is either off (HF_HUB_OFFLINE with a Hugging Face cache the
test lays out, as huggingface_hub itself writes it), unreachable (a closed port), or a small local stand-in
that answers the way the Hub answers a gated, a missing and a huge repo (its status codes and X-Error-Code)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(PROJECT / "scripts"))
from hub.files import pick_gguf  # noqa: E402

COMMIT = "0123456789abcdef0123456789abcdef01234567"
SMALL_CONFIG = """
engines: {vllm: {port: 1}, llamacpp: {port: 2}}
models:
  local-only: {engine: vllm, path: x}
  remote: {engine: llamacpp, path: r/model.gguf, repo: org/repo-GGUF, file: model.gguf}
"""


def lay_out_cache(cache: Path, repo: str, files: dict[str, bytes]) -> None:
    """A repo in the Hugging Face cache layout: refs/main → commit, snapshots/<commit>/<file> → ../../blobs/<sha>."""
    folder = cache / ("models--" + repo.replace("/", "--"))
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(COMMIT)
    for name, data in files.items():
        blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = folder / "snapshots" / COMMIT / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))


@pytest.fixture
def home(tmp_path) -> Path:
    """A project home with the shipped models.yaml (comments and all) and an empty model root."""
    (tmp_path / "config").mkdir()
    shutil.copy(PROJECT / "config" / "models.yaml", tmp_path / "config" / "models.yaml")
    (tmp_path / "models").mkdir()
    lay_out_cache(tmp_path / "hf-cache", "org/tiny-GGUF", {
        "tiny-Q8_0.gguf": b"GGUF q8", "tiny-Q4_K_M.gguf": b"GGUF q4m", "tiny-Q4_K_S.gguf": b"GGUF q4s",
        "mmproj-tiny-Q8_0.gguf": b"GGUF proj", "README.md": b"# tiny"})
    lay_out_cache(tmp_path / "hf-cache", "org/tiny-hf", {"config.json": b"{}", "model.safetensors": b"w",
                                                         "tokenizer/tokenizer.json": b"{}"})
    return tmp_path


def run(home: Path, *args, offline: bool = True, endpoint: str | None = None, config: str | None = None):
    if config is not None:
        (home / "config").mkdir(exist_ok=True)
        (home / "config" / "models.yaml").write_text(config)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(ULLM_CONFIG=str(home / "config" / "models.yaml"), ULLM_HOME=str(home), HF_HOME=str(home / "hf"),
               HF_HUB_CACHE=str(home / "hf-cache"), HF_HUB_DISABLE_TELEMETRY="1")
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    if endpoint:
        env["HF_ENDPOINT"] = endpoint
    return subprocess.run([sys.executable, str(PROJECT / "scripts" / "download_model.py"), *args],
                          capture_output=True, text=True, env=env, timeout=120)


def test_unknown_entry_and_entry_without_repo(tmp_path):
    out = run(tmp_path, "nope", config=SMALL_CONFIG)
    assert out.returncode != 0 and "'nope' is not in models.yaml" in out.stderr
    out = run(tmp_path, "local-only", config=SMALL_CONFIG)
    assert out.returncode != 0 and "has no `repo`" in out.stderr


def test_offline_and_not_cached_is_explained(tmp_path):
    out = run(tmp_path, "remote", config=SMALL_CONFIG)
    assert out.returncode == 1
    assert f"into {tmp_path / 'models' / 'r'}" in out.stdout  # a GGUF goes into its entry's folder
    assert "cannot reach the Hugging Face Hub (HF_HUB_OFFLINE is set)" in out.stderr
    assert "org/repo-GGUF is not in the local cache" in out.stderr


def test_gguf_by_quantization_from_the_cache_added_to_the_catalog(home):
    catalog = home / "config" / "models.yaml"
    before = catalog.read_text()
    out = run(home, "--model", "org/tiny-GGUF", "--gguf", "q8_0", "--add-to-catalog")
    assert out.returncode == 0, out.stderr
    assert "taking org/tiny-GGUF from the local Hugging Face cache" in out.stdout
    assert (home / "models" / "tiny-Q8_0.gguf").read_bytes() == b"GGUF q8"
    assert not (home / "models" / "mmproj-tiny-Q8_0.gguf").exists()  # the vision projector is not the model
    after = catalog.read_text()
    assert after.startswith(before), "the catalog's comments and layout must stay as they were"
    added = after[len(before):]
    assert "tiny-Q8_0:\n    engine: llamacpp\n    path: tiny-Q8_0.gguf\n    repo: org/tiny-GGUF\n" \
           "    file: tiny-Q8_0.gguf\n" in added
    sys.path.insert(0, str(PROJECT))
    from router.config import load_config
    assert load_config(catalog).models["tiny-Q8_0"].engine == "llamacpp"
    again = run(home, "--repo", "org/tiny-GGUF", "--gguf", "Q8_0", "--add-to-catalog")
    assert again.returncode == 0 and "already in the catalog: 'tiny-Q8_0'" in again.stdout
    assert catalog.read_text() == after


def test_whole_repo_from_the_cache_is_a_vllm_entry(home):
    out = run(home, "--repo", "org/tiny-hf", "--add-to-catalog", "--catalog-name", "tiny-hf-model")
    assert out.returncode == 0, out.stderr
    assert (home / "models" / "tiny-hf" / "tokenizer" / "tokenizer.json").read_bytes() == b"{}"
    assert "tiny-hf-model:\n    engine: vllm\n    path: tiny-hf\n    repo: org/tiny-hf\n" in \
        (home / "config" / "models.yaml").read_text()
    clash = run(home, "--repo", "org/tiny-GGUF", "--gguf", "Q8_0", "--add-to-catalog", "--catalog-name",
                "tiny-hf-model")
    assert clash.returncode == 1 and "already has 'tiny-hf-model'" in clash.stderr


def test_a_gguf_pattern_that_matches_nothing_or_several_lists_the_files(home):
    out = run(home, "--repo", "org/tiny-GGUF", "--gguf", "Q5_K_M")
    assert out.returncode == 1 and "no GGUF file matches 'Q5_K_M'" in out.stderr and "tiny-Q4_K_S.gguf" in out.stderr
    out = run(home, "--repo", "org/tiny-GGUF", "--gguf", "Q4_K")
    assert out.returncode == 1 and "matches several GGUF files" in out.stderr
    out = run(home, "--repo", "org/not-cached-GGUF", "--gguf", "Q8_0")
    assert out.returncode == 1 and "org/not-cached-GGUF is not in the local cache" in out.stderr


def test_pick_gguf():
    files = ["a/m-Q8_0.gguf", "m-Q4_K_M.gguf", "m-Q4_K_S.gguf", "mmproj-m-Q8_0.gguf", "README.md",
             "big-Q8_0-00002-of-00002.gguf", "big-Q8_0-00001-of-00002.gguf"]
    assert pick_gguf(files, "Q4_K_M") == ["m-Q4_K_M.gguf"]
    assert pick_gguf(files, "*q4_k_s*") == ["m-Q4_K_S.gguf"]
    assert pick_gguf(files, "m-Q8_0.gguf") == ["a/m-Q8_0.gguf"]
    assert pick_gguf(files, "big-Q8_0*") == ["big-Q8_0-00001-of-00002.gguf", "big-Q8_0-00002-of-00002.gguf"]
    assert pick_gguf(files, "mmproj*") == ["mmproj-m-Q8_0.gguf"]
    with pytest.raises(LookupError, match="several"):
        pick_gguf(files, "Q8_0")
    with pytest.raises(LookupError, match="no .gguf file"):
        pick_gguf(["config.json"], "Q8_0")


class FakeHub(BaseHTTPRequestHandler):
    """Answers like the Hub: a gated repo 401 + X-Error-Code GatedRepo, a missing one 404 + RepoNotFound, and
    the file sizes of a repo too large for any disk."""

    def answer(self, send_body: bool) -> None:
        if "org/gated" in self.path:
            code, headers, body = 401, {"X-Error-Code": "GatedRepo", "X-Error-Message": "Access restricted"}, b"{}"
        elif "org/huge" in self.path and self.path.startswith("/api/models/"):
            code, headers = 200, {"Content-Type": "application/json"}
            body = json.dumps({"id": "org/huge", "sha": COMMIT, "siblings": [
                {"rfilename": "model.safetensors", "size": 2**60}]}).encode()
        else:
            code, body = 404, b"{}"
            headers = {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"}
        self.send_response(code)
        for key, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(key, value)
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def do_GET(self):  # noqa: N802
        self.answer(True)

    def do_HEAD(self):  # noqa: N802
        self.answer(False)

    def log_message(self, *args):
        pass


@pytest.fixture
def hub():
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_gated_repo_says_what_to_do_and_reads_hf_token_from_dotenv(home, hub):
    out = run(home, "--model", "org/gated-model", offline=False, endpoint=hub)
    assert out.returncode == 1
    assert "org/gated-model is a gated model (HF_TOKEN is not set)" in out.stderr
    assert "accept its terms" in out.stderr and str(home / ".env") in out.stderr
    (home / ".env").write_text("# secrets\nHF_TOKEN=hf_test_token\n")
    out = run(home, "--model", "org/gated-model", offline=False, endpoint=hub)
    assert "HF_TOKEN is set, but its account has not been granted access yet" in out.stderr


def test_missing_repo_unreachable_hub_and_too_little_space(home, hub):
    out = run(home, "--repo", "org/no-such-model", offline=False, endpoint=hub)
    assert out.returncode == 1 and "org/no-such-model does not exist on the Hugging Face Hub" in out.stderr
    out = run(home, "--repo", "org/huge", offline=False, endpoint=hub)
    assert out.returncode == 1 and "org/huge needs 1073741824.0 GiB but only" in out.stderr
    with socket.socket() as sock:  # a port nobody listens on: the network is down
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    out = run(home, "--repo", "org/not-cached", offline=False, endpoint=closed)
    assert out.returncode == 1 and "cannot reach the Hugging Face Hub (no network)" in out.stderr
    out = run(home, "--repo", "org/tiny-hf", offline=False, endpoint=closed)  # unreachable, but cached
    assert out.returncode == 0 and (home / "models" / "tiny-hf" / "config.json").exists()


def test_a_full_disk_is_explained(tmp_path):
    import download_model
    full = OSError(errno.ENOSPC, "No space left on device")
    message = download_model.explain(full, "org/m", tmp_path / "models" / "m", None)
    assert message.startswith("the disk is full:") and f"GiB left at {tmp_path / 'models' / 'm'}" in message
