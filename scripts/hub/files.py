"""Which files of a Hugging Face repo to fetch: one GGUF picked by quantization or pattern, and the repo's
file list from the local cache when the Hub cannot be reached."""

from __future__ import annotations

import fnmatch
import re
from pathlib import PurePosixPath

SPLIT = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)  # llama.cpp's split files: x-00001-of-00003.gguf


def pick_gguf(files: list[str], pattern: str) -> list[str]:
    """The GGUF file `pattern` names: a quantization (Q8_0, q4_k_m: a whole word of the file name) or a glob
    (`*Q8_0*`). A split model gives all its parts, the first one first. Raises LookupError (with the choices)
    when nothing or more than one model matches."""
    ggufs = sorted(f for f in files if f.lower().endswith(".gguf"))
    if not ggufs:
        raise LookupError(f"the repo has no .gguf file (its files: {', '.join(sorted(files)[:20]) or 'none'})")
    if any(ch in pattern for ch in "*?["):
        matched = [f for f in ggufs if fnmatch.fnmatch(PurePosixPath(f).name.lower(), pattern.lower())]
    else:
        word = re.compile(rf"(?<![a-z0-9]){re.escape(pattern.lower())}(?![a-z0-9])")
        matched = [f for f in ggufs if word.search(PurePosixPath(f).name.lower())]
    if not pattern.lower().startswith("mmproj"):  # vision projectors are not the model
        matched = [f for f in matched if not PurePosixPath(f).name.lower().startswith("mmproj")]
    models = {SPLIT.sub("", f) for f in matched}
    if len(models) == 1:
        return sorted(matched)  # 00001 sorts first
    choices = ", ".join(PurePosixPath(f).name for f in ggufs)
    if not matched:
        raise LookupError(f"no GGUF file matches {pattern!r}; the repo has: {choices}")
    raise LookupError(f"{pattern!r} matches several GGUF files ({', '.join(sorted(models))}); give a longer "
                      f"pattern or --file. The repo has: {choices}")


def cached_repo_files(repo: str, revision: str | None = None) -> list[str] | None:
    """The repo's files in the local Hugging Face cache (the revision's snapshot), or None if not cached."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound
    try:
        cache = scan_cache_dir()
    except CacheNotFound:
        return None
    for info in cache.repos:
        if info.repo_id != repo or info.repo_type != "model":
            continue
        for rev in info.revisions:
            if (revision or "main") in rev.refs or rev.commit_hash == revision:
                return sorted(str(f.file_path.relative_to(rev.snapshot_path)) for f in rev.files)
    return None
