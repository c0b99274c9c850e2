#!/usr/bin/env python3
"""Download a model from the Hugging Face Hub into the model root — the one step that goes online, and
only when you run it.

  .venv/bin/python scripts/download_model.py qwen3-0.6b          # a models.yaml entry with `repo` (+ `file`)
  .venv/bin/python scripts/download_model.py --repo Qwen/Qwen3-0.6B
  .venv/bin/python scripts/download_model.py --repo LiquidAI/LFM2.5-1.2B-JP-GGUF --file LFM2.5-1.2B-JP-Q8_0.gguf

Gated models need HF_TOKEN in the environment. Afterwards load it: POST /v1/models/load.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from router.config import ConfigError, load_config, model_roots  # noqa: E402


def target_for(args, config) -> tuple[str, str | None, Path]:
    """(repo, file, destination) from a catalog entry or from --repo/--file/--path."""
    root = model_roots(config)[0]
    if args.name:
        entry = config.models.get(args.name)
        if entry is None:
            raise SystemExit(f"download_model: {args.name!r} is not in models.yaml "
                             f"(known: {', '.join(config.models) or 'none'}); or use --repo")
        if not entry.repo:
            raise SystemExit(f"download_model: models.yaml entry {args.name!r} has no `repo` to download from")
        path = Path(entry.path)
        destination = path if path.is_absolute() else root / path
        # a GGUF entry's path names the file; the download goes into its folder
        return entry.repo, entry.file, destination.parent if entry.file else destination
    if not args.repo:
        raise SystemExit("download_model: name a models.yaml entry, or give --repo")
    default = root if args.file else root / args.repo.split("/")[-1]
    return args.repo, args.file, Path(args.path) if args.path else default


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", help="a models.yaml entry that has `repo` (and `file` for GGUF)")
    parser.add_argument("--repo", help="Hugging Face repo id, e.g. Qwen/Qwen3-0.6B")
    parser.add_argument("--file", help="one file of the repo (GGUF); default: the whole repo")
    parser.add_argument("--path", help="destination folder (default: the first model root)")
    parser.add_argument("--revision", help="branch, tag or commit")
    args = parser.parse_args()
    try:
        config = load_config()
    except ConfigError as exc:
        print(f"download_model: {exc}", file=sys.stderr)
        return 1
    repo, filename, destination = target_for(args, config)
    destination.mkdir(parents=True, exist_ok=True)
    print(f"downloading {repo}{'/' + filename if filename else ''} into {destination}", flush=True)

    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        if filename:
            result = hf_hub_download(repo, filename, revision=args.revision, local_dir=destination)
        else:
            result = snapshot_download(repo, revision=args.revision, local_dir=destination)
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as exc:
        print(f"download_model: could not download {repo}: {exc}\n"
              "Check the repo id, your network, and HF_TOKEN for gated models.", file=sys.stderr)
        return 1
    print(f"done: {result}\nadd it to config/models.yaml (see docs/configuration.md), then "
          "POST /v1/models/load", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
