#!/usr/bin/env python3
"""Download a model from the Hugging Face Hub into the model root — the one step that goes online, and
only when you run it.

  .venv/bin/python scripts/download_model.py qwen3-0.6b          # a models.yaml entry with `repo` (+ `file`)
  .venv/bin/python scripts/download_model.py --model Qwen/Qwen3-0.6B --add-to-catalog
  .venv/bin/python scripts/download_model.py --repo LiquidAI/LFM2.5-1.2B-JP-GGUF --gguf Q8_0 --add-to-catalog
  .venv/bin/python scripts/download_model.py --repo LiquidAI/LFM2.5-1.2B-JP-GGUF --file LFM2.5-1.2B-JP-Q8_0.gguf

`--gguf` picks one file of a GGUF repo by quantization (Q8_0, Q4_K_M) or by a filename pattern (`*Q8_0*`).
`--add-to-catalog` adds the model to config/models.yaml (GGUF: llamacpp, else vllm), keeping its comments.
Gated models need HF_TOKEN, in the environment or in the project's .env file. Without the network, a model
already in the Hugging Face cache (HF_HUB_CACHE) is copied from there. Afterwards: POST /v1/models/load.
"""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from router.config import ConfigError, config_path, home_dir, load_config, model_roots  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hub.files import cached_repo_files, pick_gguf  # noqa: E402


class DownloadError(Exception):
    """A download that cannot be done, with what to do about it."""


@dataclass
class Target:
    repo: str
    files: list[str] | None  # None: the whole repo
    destination: Path  # the folder the files go into

    @property
    def model_path(self) -> Path:
        """What the router loads: the (first) GGUF file, or the model folder."""
        return self.destination / self.files[0] if self.files else self.destination


def load_token(home: Path) -> str | None:
    """HF_TOKEN from the environment, else from `home/.env`; exported so huggingface_hub sends it."""
    token = os.environ.get("HF_TOKEN")
    if not token and (home / ".env").is_file():
        from dotenv import dotenv_values
        token = dotenv_values(home / ".env").get("HF_TOKEN")
        if token:
            os.environ["HF_TOKEN"] = token
    return token or None


def repo_files(repo: str, revision: str | None) -> list[str]:
    """The repo's file names: from the Hub, or from the local cache when the Hub cannot be reached."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import OfflineModeIsEnabled
    import httpx2
    try:
        return HfApi().list_repo_files(repo, revision=revision)
    except (OfflineModeIsEnabled, httpx2.ConnectError, httpx2.TimeoutException) as exc:
        cached = cached_repo_files(repo, revision)
        if cached is None:
            raise DownloadError(offline_message(repo)) from exc
        return cached


def offline_message(repo: str) -> str:
    from huggingface_hub import constants
    why = "HF_HUB_OFFLINE is set" if constants.is_offline_mode() else "no network"
    return (f"cannot reach the Hugging Face Hub ({why}) and {repo} is not in the local cache "
            f"({constants.HF_HUB_CACHE}). Connect to the network and run this again, or copy the model into the "
            "model root by hand.")


def explain(exc: BaseException, repo: str, destination: Path, token: str | None) -> str:
    """One clear sentence for each way a download fails, saying what to do."""
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)
    import httpx2
    if isinstance(exc, GatedRepoError):
        have = ("HF_TOKEN is set, but its account has not been granted access yet" if token
                else "HF_TOKEN is not set")
        return (f"{repo} is a gated model ({have}). Open https://huggingface.co/{repo} while logged in, accept "
                "its terms, create a read token at https://huggingface.co/settings/tokens, and put "
                f"HF_TOKEN=hf_... in the environment or in {home_dir() / '.env'}; then run this again.")
    if isinstance(exc, RepositoryNotFoundError):
        return (f"{repo} does not exist on the Hugging Face Hub (or is private). Check the spelling, "
                "owner/name with the same capitals as on the Hub; a private repo needs HF_TOKEN.")
    if isinstance(exc, RevisionNotFoundError):
        return f"{repo} has no such revision: {exc}"
    if isinstance(exc, LocalEntryNotFoundError):
        return offline_message(repo)
    if isinstance(exc, EntryNotFoundError):
        return f"a file is missing from {repo}: {exc}. List its files at https://huggingface.co/{repo}/tree/main"
    if isinstance(exc, (httpx2.ConnectError, httpx2.TimeoutException)):
        return offline_message(repo)
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"the disk is full: {free_gib(destination):.1f} GiB left at {destination}. Free some space, or "
                "download to another disk with --path (a folder under a model root).")
    return f"could not download {repo}: {exc}. Check the repo id, your network, and HF_TOKEN for gated models."


def free_gib(path: Path) -> float:
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free / 2**30


def check_space(repo: str, files: list[str] | None, revision: str | None, destination: Path) -> None:
    """Refuse before downloading when the Hub says the files do not fit (skipped when sizes are unknown)."""
    from huggingface_hub import HfApi
    try:
        info = HfApi().model_info(repo, revision=revision, files_metadata=True)
    except Exception:  # noqa: BLE001 - sizes are a courtesy; the download itself reports real errors
        return
    wanted = set(files) if files else None
    need = sum(s.size or 0 for s in info.siblings or [] if wanted is None or s.rfilename in wanted)
    if need and need > free_gib(destination) * 2**30:
        raise DownloadError(f"{repo} needs {need / 2**30:.1f} GiB but only {free_gib(destination):.1f} GiB is "
                            f"free at {destination}. Free some space, or use --path on another disk.")


def resolve_target(args, config) -> Target:
    """Which repo, which files, and where they go: a catalog entry, or --repo/--model with --file/--gguf."""
    root = model_roots(config)[0]
    if args.name:
        entry = config.models.get(args.name)
        if entry is None:
            raise DownloadError(f"{args.name!r} is not in models.yaml (known: {', '.join(config.models) or 'none'});"
                                " or use --repo")
        if not entry.repo:
            raise DownloadError(f"models.yaml entry {args.name!r} has no `repo` to download from")
        path = Path(entry.path)
        destination = path if path.is_absolute() else root / path
        # a GGUF entry's path names the file; the download goes into its folder
        return Target(entry.repo, [entry.file] if entry.file else None,
                      destination.parent if entry.file else destination)
    if not args.repo:
        raise DownloadError("name a models.yaml entry, or give --repo (or --model) with a Hugging Face repo id")
    files = [args.file] if args.file else None
    if args.gguf:
        try:
            files = pick_gguf(repo_files(args.repo, args.revision), args.gguf)
        except LookupError as exc:
            raise DownloadError(f"{args.repo}: {exc}") from exc
    default = root if files else root / args.repo.split("/")[-1]
    return Target(args.repo, files, Path(args.path).resolve() if args.path else default)


def download(target: Target, revision: str | None = None) -> Path:
    """Fetch into the destination; when the Hub cannot be reached, take the files from the local cache."""
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled
    import httpx2
    target.destination.mkdir(parents=True, exist_ok=True)
    try:
        for name in target.files or []:
            hf_hub_download(target.repo, name, revision=revision, local_dir=target.destination)
        if not target.files:
            snapshot_download(target.repo, revision=revision, local_dir=target.destination)
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, httpx2.ConnectError, httpx2.TimeoutException):
        copy_from_cache(target, revision)  # raises LocalEntryNotFoundError when it is not cached either
    return target.model_path


def copy_from_cache(target: Target, revision: str | None) -> None:
    from huggingface_hub import hf_hub_download, snapshot_download
    if target.files:
        sources = {name: Path(hf_hub_download(target.repo, name, revision=revision, local_files_only=True))
                   for name in target.files}
    else:
        snapshot = Path(snapshot_download(target.repo, revision=revision, local_files_only=True))
        sources = {str(p.relative_to(snapshot)): p for p in snapshot.rglob("*") if p.is_file()}
    print(f"the Hub cannot be reached: taking {target.repo} from the local Hugging Face cache", flush=True)
    for name, source in sources.items():
        out = target.destination / name
        out.parent.mkdir(parents=True, exist_ok=True)
        if not out.exists():
            shutil.copyfile(source.resolve(), out)


def fetch(args, config) -> Path:
    """Resolve, check space, download; every failure becomes a DownloadError with advice."""
    token = load_token(home_dir())
    repo, destination = args.repo or args.name, model_roots(config)[0]
    try:
        target = resolve_target(args, config)
        repo, destination = target.repo, target.destination
        label = target.repo + (f" ({', '.join(target.files)})" if target.files else "")
        print(f"downloading {label} into {target.destination}", flush=True)
        check_space(target.repo, target.files, args.revision, target.destination)
        return download(target, args.revision)
    except DownloadError:
        raise
    except Exception as exc:  # noqa: BLE001 - every library error is turned into advice below
        raise DownloadError(explain(exc, repo, destination, token)) from exc


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", nargs="?", help="a models.yaml entry that has `repo` (and `file` for GGUF)")
    p.add_argument("--repo", "--model", dest="repo", help="Hugging Face repo id, e.g. Qwen/Qwen3-0.6B")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--file", help="one file of the repo (GGUF); default: the whole repo")
    which.add_argument("--gguf", metavar="PATTERN", help="pick one GGUF file: a quantization (Q8_0) or a glob")
    p.add_argument("--path", help="destination folder (default: the first model root)")
    p.add_argument("--revision", help="branch, tag or commit")
    p.add_argument("--add-to-catalog", action="store_true", help="add the model to config/models.yaml")
    p.add_argument("--catalog-name", help="its name in models.yaml (default: the folder or GGUF file name)")
    return p


def add_to_catalog(args, config, path: Path) -> None:
    from hub.catalog import add_model
    if args.name:
        print(f"{args.name!r} is already in the catalog", flush=True)
        return
    try:
        name, added = add_model(config_path(), config, args.catalog_name, path, args.repo, model_roots(config))
    except ValueError as exc:
        raise DownloadError(str(exc)) from exc
    print(f"{'added' if added else 'already in the catalog:'} {name!r} ({config_path()}); load it with "
          f'POST /v1/models/load {{"model_path": "{name}"}} (a running router: POST /v1/config/reload first)',
          flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        config = load_config()
        path = fetch(args, config)
        print(f"done: {path}", flush=True)
        if args.add_to_catalog:
            add_to_catalog(args, config, path)
        else:
            print("add it to config/models.yaml (or run again with --add-to-catalog), then POST /v1/models/load",
                  flush=True)
    except (ConfigError, DownloadError) as exc:
        print(f"download_model: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
