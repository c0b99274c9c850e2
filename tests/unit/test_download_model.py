"""download_model.py refuses clearly what it cannot do, without going online (the Hub is offline here)."""

import os
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]


def run(tmp_path, *args, yaml_text=None):
    config = tmp_path / "models.yaml"
    config.write_text(yaml_text or """
engines: {vllm: {port: 1}, llamacpp: {port: 2}}
models:
  local-only: {engine: vllm, path: x}
  remote: {engine: llamacpp, path: r/model.gguf, repo: org/repo-GGUF, file: model.gguf}
""")
    env = {**os.environ, "ULLM_CONFIG": str(config), "ULLM_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, str(PROJECT / "scripts" / "download_model.py"), *args],
                          capture_output=True, text=True, env=env, timeout=120)


def test_unknown_entry_and_entry_without_repo(tmp_path):
    out = run(tmp_path, "nope")
    assert out.returncode != 0 and "'nope' is not in models.yaml" in out.stderr
    out = run(tmp_path, "local-only")
    assert out.returncode != 0 and "has no `repo`" in out.stderr


def test_download_failure_is_explained(tmp_path):
    out = run(tmp_path, "remote")
    assert out.returncode == 1
    assert f"into {tmp_path / 'models' / 'r'}" in out.stdout  # a GGUF goes into its entry's folder
    assert "could not download org/repo-GGUF" in out.stderr and "HF_TOKEN" in out.stderr
