"""The ranking across every model evaluated so far: pass rate first, then speed from the model's benchmark
(benchmarks/<label>/summary.json, when there is one), then the label."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from evaluation.params import human
from evaluation.suite import CATEGORIES
from evaluation.target import folder_name

RANKING_HEADER = ["rank", "model", "local/API", "engine", "parameters", "checks", "pass rate %", "spread %",
                  "tokens/s", "grade"]


def load_results(root: Path) -> list[dict]:
    """Every evals/<label>/results.json (folders starting with _ are the scripts' own outputs)."""
    found = []
    for path in sorted(root.glob("*/results.json")):
        if path.parent.name.startswith("_"):
            continue
        try:
            data = json.loads(path.read_text())
        except ValueError as exc:
            print(f"rank_models: skipping {path}: {exc}", file=sys.stderr)
            continue
        if data.get("schema") == 1 and data.get("kind") == "instruction-following":
            found.append(data)
    return found


def benchmark_speed(benchmarks_dir: Path | None, label: str) -> tuple[float | None, int | None]:
    """(single-stream tokens/s, at how many tokens) from the benchmark of the same label: the median at the
    longest length it measured. (None, None) when there is none."""
    if benchmarks_dir is None:
        return None, None
    path = benchmarks_dir / folder_name(label) / "summary.json"
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return None, None
    measured = [s for s in summary.get("single_stream", []) if s.get("tokens_per_s") is not None]
    if not measured:
        return None, None
    longest = max(measured, key=lambda s: s["max_tokens"])
    return longest["tokens_per_s"], longest["max_tokens"]


def ranked(results: list[dict], benchmarks_dir: Path | None) -> list[dict]:
    """One row per model, best first: runs of the whole suite before subsets (--checks), then the higher pass
    rate, then the faster (unknown speed last), then by label."""
    rows = []
    for r in results:
        speed, length = benchmark_speed(benchmarks_dir, r["label"])
        s = r["summary"]
        rows.append({"label": r["label"], "remote": r["remote"], "engine": r["engine"],
                     "parameters": r.get("parameters"), "checks": s["checks"], "complete": r.get("complete", True),
                     "pass_rate": s["pass_rate"], "min": s["pass_rate_min"], "max": s["pass_rate_max"],
                     "repeats": s["repeats"], "tokens_per_s": speed, "speed_tokens": length, "grade": s["grade"],
                     "categories": s["categories"]})
    rows.sort(key=lambda x: (not x["complete"], -round(x["pass_rate"], 6), x["tokens_per_s"] is None,
                             -(x["tokens_per_s"] or 0), x["label"]))
    for n, row in enumerate(rows, 1):
        row["rank"] = n
    return rows


def checks_cell(row: dict) -> str:
    return str(row["checks"]) + ("" if row["complete"] else " (subset)")


def spread_cell(row: dict) -> str:
    return f"{row['min']:.1f}–{row['max']:.1f}" if row["repeats"] > 1 else ""


def ranking_table(rows: list[dict], for_csv: bool = False) -> tuple[list[str], list[list]]:
    out = []
    for x in rows:
        out.append([x["rank"], x["label"], "API" if x["remote"] else "local", x["engine"],
                    x["parameters"] if for_csv else human(x["parameters"]), checks_cell(x), round(x["pass_rate"], 1),
                    spread_cell(x), None if x["tokens_per_s"] is None else round(x["tokens_per_s"], 1), x["grade"]])
    return RANKING_HEADER, out


def category_table(rows: list[dict]) -> tuple[list[str], list[list]]:
    """Pass rate per category for each model, in the ranking's order; – where a subset left it out."""
    keys = [k for k in CATEGORIES if any(k in x["categories"] for x in rows)]
    header = ["model", *[f"{CATEGORIES[k]} ({max(x['categories'].get(k, {}).get('checks', 0) for x in rows)})"
                         for k in keys]]
    return header, [[x["label"], *[round(x["categories"][k]["pass_rate"], 1) if k in x["categories"] else None
                                   for k in keys]] for x in rows]
