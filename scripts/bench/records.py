"""The measured rows and their CSV files: one row per single-stream request, one per parallel round, one per
load. Rows are appended and flushed as they are measured, so an interrupted run keeps them and a rerun can
skip what is already there."""

from __future__ import annotations

import csv
import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SINGLE_CSV, PARALLEL_CSV, LOAD_CSV = "single_stream.csv", "parallel.csv", "load.csv"
DEPTH_CSV, ANCHOR_CSV = "depth.csv", "anchor.csv"


@dataclass
class SingleRow:
    label: str
    engine: str  # vllm, llamacpp, or remote
    model: str
    max_tokens: int
    repeat: int
    prompt_tokens: int | None = None
    completion_tokens: int | None = None  # from the engine's usage, never counted by the client
    ended_early: bool = False  # fewer tokens than asked (an end-of-sequence, a context limit, a stop)
    finish_reason: str | None = None
    ttft_ms: float | None = None  # request sent → first generated text
    elapsed_s: float | None = None  # request sent → stream ended
    tokens_per_s: float | None = None  # completion_tokens / elapsed_s
    decode_tokens_per_s: float | None = None  # (completion_tokens - 1) / (stream end - first token)
    ceiling_tokens_per_s: float | None = None  # bandwidth ÷ bytes per token at this row's mean context
    percent_of_ceiling: float | None = None  # decode_tokens_per_s ÷ ceiling, in percent
    diffusion_steps: int | None = None  # a diffusion model's denoising passes (its tokens/s: tokens ÷ elapsed_s)
    error: str | None = None
    started_at: str = ""

    KEY = ("max_tokens", "repeat")


@dataclass
class ParallelRow:
    label: str
    engine: str
    model: str
    parallel: int
    repeat: int
    max_tokens: int
    requests: int = 0
    completed: int = 0  # requests that returned usage without an error
    ended_early: int = 0
    errors: int = 0
    completion_tokens: int = 0  # summed over the completed requests
    wall_s: float | None = None  # first request sent → last stream ended
    total_tokens_per_s: float | None = None  # completion_tokens / wall_s
    per_session_tokens_per_s: float | None = None  # median of each stream's own tokens / its own elapsed time
    per_session_min_tokens_per_s: float | None = None  # the slowest stream
    ttft_p50_ms: float | None = None
    ttft_p95_ms: float | None = None
    ttft_max_ms: float | None = None
    ceiling_tokens_per_s: float | None = None  # N streams sharing one read of the weights per step
    percent_of_ceiling: float | None = None  # total_tokens_per_s ÷ ceiling, in percent
    error: str | None = None  # the first error seen, if any
    started_at: str = ""

    KEY = ("parallel", "repeat")


@dataclass
class DepthRow:
    """One timed request of the depth phase (bench/depth.py): pp (prefill) or tg (decode) at a KV depth."""
    label: str
    engine: str
    model: str
    test: str  # pp or tg
    tokens: int  # prompt tokens processed (pp) or generated (tg) after the depth
    depth: int  # tokens already in the KV cache
    repeat: int
    prompt_tokens: int | None = None  # the engine's count: depth + the new tokens
    cached_tokens: int | None = None  # of those, taken from the prefix cache (when the engine says)
    completion_tokens: int | None = None
    ttft_ms: float | None = None
    elapsed_s: float | None = None
    tokens_per_s: float | None = None  # pp: tokens ÷ TTFT; tg: (completion_tokens - 1) ÷ time after the first
    ceiling_tokens_per_s: float | None = None  # tg only: bandwidth ÷ bytes per token at depth + tokens/2
    percent_of_ceiling: float | None = None
    error: str | None = None
    started_at: str = ""

    KEY = ("test", "tokens", "depth", "repeat")


@dataclass
class LoadRow:
    label: str
    engine: str
    model: str
    model_path: str | None = None
    options: dict = field(default_factory=dict)  # what the engine was started with (JSON in the CSV)
    previous_model: str | None = None  # what the engine served before the load
    already_loaded: bool = False  # the same model and options were loaded already: nothing restarted
    cold_load: bool = False  # --cold-load: the engine was unloaded first, so nothing was left to reuse
    load_seconds: float | None = None  # as the router reports it (process start → ready)
    load_request_s: float | None = None  # the load request, sent → answered
    first_token_s: float | None = None  # load request sent → first token of the first request after it
    error: str | None = None
    started_at: str = ""


Row = SingleRow | ParallelRow | LoadRow | DepthRow


def columns(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _encode(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, float):
        return round(value, 4)
    return value


def _decode(text: str, kind: Any) -> Any:
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        if text == "":
            return None
        kind = next(k for k in typing.get_args(kind) if k is not type(None))
    if kind is bool:
        return text == "True"
    if kind is int:
        return int(text)
    if kind is float:
        return float(text)
    if kind is dict:
        return json.loads(text) if text else {}
    return text


def append(path: Path, row: Row) -> None:
    """Append one row (writing the header to a new file) and flush it to disk at once."""
    new = not path.exists() or path.stat().st_size == 0
    with path.open("a", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=columns(type(row)))
        if new:
            writer.writeheader()
        writer.writerow({k: _encode(v) for k, v in dataclasses.asdict(row).items()})


def read(path: Path, cls: type) -> list:
    """The rows of a CSV written by append(); none when the file does not exist."""
    if not path.exists():
        return []
    hints = typing.get_type_hints(cls)
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != columns(cls):
            raise ValueError(f"{path} has columns {reader.fieldnames}, expected {columns(cls)}: move it away "
                             "or run with --fresh")
        return [cls(**{k: _decode(v, hints[k]) for k, v in record.items()}) for record in reader]


def done_keys(rows: list) -> set[tuple]:
    """The measurements a resumed run can skip: rows that completed without an error."""
    return {tuple(getattr(r, k) for k in r.KEY) for r in rows if not r.error}
