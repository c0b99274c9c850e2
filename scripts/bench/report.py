"""From the measured rows to summary.json and summary.md: medians per length and per parallelism, parallel
efficiency, the largest parallelism that keeps the per-session threshold, and the load."""

from __future__ import annotations

import json
from pathlib import Path

from bench import stats, tables
from bench.machine import one_line
from bench.records import LoadRow, ParallelRow, SingleRow


def summarize_single(rows: list[SingleRow]) -> list[dict]:
    out = []
    for n in sorted({r.max_tokens for r in rows}):
        ok = [r for r in rows if r.max_tokens == n and not r.error]
        rates = [r.tokens_per_s for r in ok]
        out.append({"max_tokens": n, "runs": len(ok), "tokens_per_s": stats.median(rates),
                    "tokens_per_s_min": min(rates, default=None), "tokens_per_s_max": max(rates, default=None),
                    "ttft_ms": stats.median(r.ttft_ms for r in ok),
                    "decode_tokens_per_s": stats.median(r.decode_tokens_per_s for r in ok),
                    "ended_early": sum(r.ended_early for r in ok),
                    "errors": sum(1 for r in rows if r.max_tokens == n and r.error)})
    return out


def summarize_parallel(rows: list[ParallelRow], single_rate: float | None) -> list[dict]:
    """Medians over the rounds at each N that had no failed request; failed requests are counted."""
    out = []
    for n in sorted({r.parallel for r in rows}):
        ok = [r for r in rows if r.parallel == n and not r.error]
        per_session = stats.median(r.per_session_tokens_per_s for r in ok)
        out.append({"parallel": n, "runs": len(ok), "max_tokens": ok[0].max_tokens if ok else None,
                    "total_tokens_per_s": stats.median(r.total_tokens_per_s for r in ok),
                    "per_session_tokens_per_s": per_session,
                    "per_session_min_tokens_per_s": min((r.per_session_min_tokens_per_s for r in ok), default=None),
                    "efficiency": stats.efficiency(per_session, single_rate),
                    "ttft_p50_ms": stats.median(r.ttft_p50_ms for r in ok),
                    "ttft_p95_ms": stats.median(r.ttft_p95_ms for r in ok),
                    "ended_early": sum(r.ended_early for r in ok),
                    "errors": sum(r.errors for r in rows if r.parallel == n)})
    return out


def chosen_load(rows: list[LoadRow]) -> dict | None:
    """The latest load that really started the engine; else the latest one (the model was loaded already)."""
    real = [r for r in rows if not r.already_loaded and not r.error]
    row = (real or rows or [None])[-1]
    return None if row is None else {**row.__dict__, "runs": len(rows)}


def summarize(meta: dict, single: list[SingleRow], parallel: list[ParallelRow], loads: list[LoadRow],
              threshold: float, parallel_tokens: int) -> dict:
    single_summary = summarize_single(single)
    measured = [s["max_tokens"] for s in single_summary if s["tokens_per_s"] is not None]
    ref_len = stats.reference_length(measured, parallel_tokens)
    ref_rate = next((s["tokens_per_s"] for s in single_summary if s["max_tokens"] == ref_len), None)
    parallel_summary = summarize_parallel(parallel, ref_rate)
    best = stats.max_parallel_meeting({p["parallel"]: p["per_session_tokens_per_s"] for p in parallel_summary},
                                      threshold)
    at_best = next((p for p in parallel_summary if p["parallel"] == best), None)
    return {**meta, "load": chosen_load(loads), "single_stream": single_summary,
            "efficiency_reference": {"max_tokens": ref_len, "tokens_per_s": ref_rate},
            "parallel_tokens": parallel_tokens, "parallel": parallel_summary,
            "threshold": {"tokens_per_s": threshold, "max_parallel": best,
                          "per_session_tokens_per_s": at_best and at_best["per_session_tokens_per_s"],
                          "total_tokens_per_s": at_best and at_best["total_tokens_per_s"]}}


def engine_line(s: dict) -> list[str]:
    status, versions = s.get("engine_status") or {}, (s.get("machine") or {}).get("engine_versions") or {}
    parts = [f"{status['memory_rss_bytes'] / 2**30:.2f} GiB resident after the load"] \
        if status.get("memory_rss_bytes") else []
    parts += [f"{name} {version}" for name, version in versions.items()
              if name.startswith("vllm" if s.get("engine") == "vllm" else "llama")]
    return [f"- Engine: {', '.join(parts)}"] if parts else []


def load_note(load: dict) -> str:
    if load["error"]:
        return load["error"]
    if load["already_loaded"]:
        return "already loaded: nothing restarted"
    return "cold: unloaded first" if load.get("cold_load") else ""


def markdown(s: dict) -> str:
    lines = [f"# Benchmark: {s['label']} ({'remote API' if s.get('remote') else s['engine']})", ""]
    if s.get("interrupted") or not s.get("complete"):
        lines += ["**Incomplete**: interrupted or not every planned measurement is in yet; run the same command "
                  "again to resume.", ""]
    settings = s.get("settings", {})
    lines += [f"- Model: `{s['model']}`" + (f", path `{s['model_path']}`" if s.get("model_path") else ""),
              f"- Endpoint: {s.get('endpoint')}" + (f", engine options: `{json.dumps(s['options'], sort_keys=True)}`"
                                                     if s.get("options") else ""),
              f"- Machine: {one_line(s.get('machine', {}))}",
              *engine_line(s),
              f"- Requests: {settings.get('api')} API, prompts from `{settings.get('prompts')}` "
              f"({settings.get('prompt_count')} prompts), temperature {settings.get('temperature')}, "
              f"top_p {settings.get('top_p')}, ignore_eos {'on' if settings.get('ignore_eos') else 'off'}; "
              "token counts from the engine's `usage`",
              f"- Measured {s.get('started_at')} to {s.get('updated_at')} (UTC)", ""]
    load = s.get("load")
    if load:
        lines += ["## Load", "", tables.markdown(
            ["model", "previous model", "router load s", "load request s", "request → first token s", "note"],
            [[load["model"], load["previous_model"], load["load_seconds"], load["load_request_s"],
              load["first_token_s"], load_note(load)]], digits=2)]
    lines += ["## Single stream", "", tables.markdown(
        ["tokens", "runs", "tokens/s (median)", "min", "max", "TTFT ms", "decode tokens/s", "ended early", "errors"],
        [[x["max_tokens"], x["runs"], x["tokens_per_s"], x["tokens_per_s_min"], x["tokens_per_s_max"],
          x["ttft_ms"], x["decode_tokens_per_s"], x["ended_early"], x["errors"]] for x in s["single_stream"]])]
    if s["parallel"]:
        ref = s["efficiency_reference"]
        lines += [f"## Parallel ({s['parallel_tokens']} tokens per stream)", "", tables.markdown(
            ["streams", "runs", "total tokens/s", "per-session tokens/s", "slowest session", "efficiency",
             "TTFT p50 ms", "TTFT p95 ms", "ended early", "errors"],
            [[x["parallel"], x["runs"], x["total_tokens_per_s"], x["per_session_tokens_per_s"],
              x["per_session_min_tokens_per_s"], x["efficiency"], x["ttft_p50_ms"], x["ttft_p95_ms"],
              x["ended_early"], x["errors"]] for x in s["parallel"]], digits=[0, 0, 1, 1, 1, 2, 1, 1, 0, 0]),
            f"Efficiency: per-session tokens/s ÷ single-stream tokens/s at {ref['max_tokens']} tokens "
            f"({tables.fmt(ref['tokens_per_s'])} tokens/s).", ""]
        t = s["threshold"]
        best = (f"**{t['max_parallel']}** streams ({tables.fmt(t['per_session_tokens_per_s'])} tokens/s per "
                f"session, {tables.fmt(t['total_tokens_per_s'])} total)" if t["max_parallel"] else
                "**none** of the measured levels")
        lines += [f"Largest parallelism that keeps ≥ {t['tokens_per_s']:g} tokens/s per session: {best}.",
                  ""]
    lines += [f"![{Path(p).stem.replace('_', ' ')}]({p})\n" for p in s.get("plots", [])]
    return "\n".join(lines)


def write(folder: Path, summary: dict) -> None:
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    (folder / "summary.md").write_text(markdown(summary))
