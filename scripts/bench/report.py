"""From the measured rows to summary.json and summary.md: medians per length and per parallelism, parallel
efficiency, the largest parallelism that keeps the per-session threshold, the load, each figure beside its
memory-bandwidth ceiling, and the depth tests beside the engine's own benchmark tool (anchor.csv)."""

from __future__ import annotations

import json
from pathlib import Path

from bench import records, stats, tables
from bench.ceiling import percent
from bench.machine import one_line
from bench.records import DepthRow, LoadRow, ParallelRow, SingleRow


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
                    "diffusion_steps": stats.median(r.diffusion_steps for r in ok if r.diffusion_steps is not None),
                    "errors": sum(1 for r in rows if r.max_tokens == n and r.error), **_against_ceiling(ok, "decode")})
    return out


def _against_ceiling(ok: list, measured: str) -> dict:
    """The median ceiling of the rows and the percent their median `measured` rate reaches (decode: the
    decode rate; total: total tokens/s)."""
    limit = stats.median(r.ceiling_tokens_per_s for r in ok)
    rate = stats.median(getattr(r, "decode_tokens_per_s" if measured == "decode" else "total_tokens_per_s")
                        for r in ok)
    return {"ceiling_tokens_per_s": limit, "percent_of_ceiling": percent(rate, limit)}


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
                    "errors": sum(r.errors for r in rows if r.parallel == n), **_against_ceiling(ok, "total")})
    return out


def summarize_depth(rows: list[DepthRow], anchors: list[dict]) -> list[dict]:
    """Per test and depth: medians, the ceiling (tg), and each tool's figure with ours ÷ theirs."""
    tools = {(a["tool"], r["test"], r["tokens"], r["depth"]): r["tokens_per_s"] for a in anchors
             for r in a.get("results", [])}
    out = []
    for key in sorted({(r.test, r.tokens, r.depth) for r in rows}, key=lambda k: (k[2], k[0], k[1])):
        ok = [r for r in rows if (r.test, r.tokens, r.depth) == key and not r.error]
        rate = stats.median(r.tokens_per_s for r in ok)
        limit = stats.median(r.ceiling_tokens_per_s for r in ok)
        entry = {"test": key[0], "tokens": key[1], "depth": key[2], "name": f"{key[0]}{key[1]} @ d{key[2]}",
                 "runs": len(ok), "tokens_per_s": rate, "ttft_ms": stats.median(r.ttft_ms for r in ok),
                 "cached_tokens": stats.median(r.cached_tokens for r in ok), "ceiling_tokens_per_s": limit,
                 "percent_of_ceiling": percent(rate, limit),
                 "errors": sum(1 for r in rows if (r.test, r.tokens, r.depth) == key and r.error), "anchors": {}}
        for a in anchors:
            theirs = tools.get((a["tool"], *key))
            entry["anchors"][a["tool"]] = {"tokens_per_s": theirs, "ratio": ratio(rate, theirs),
                                           "percent_of_ceiling": percent(theirs, limit) if key[0] == "tg" else None}
        out.append(entry)
    return out


def ratio(ours: float | None, theirs: float | None) -> float | None:
    return ours / theirs if ours is not None and theirs else None


def anchor_rows(summary: dict) -> tuple[list[str], list[list]]:
    """anchor.csv: each depth test beside each tool's figure."""
    header = ["label", "engine", "tool", "test", "tokens", "depth", "tokens_per_s", "tool_tokens_per_s",
              "ours_over_tool", "ceiling_tokens_per_s", "percent_of_ceiling", "tool_percent_of_ceiling"]
    rows = [[summary["label"], summary["engine"], tool, d["test"], d["tokens"], d["depth"], d["tokens_per_s"],
             a["tokens_per_s"], a["ratio"], d["ceiling_tokens_per_s"], d["percent_of_ceiling"], a["percent_of_ceiling"]]
            for d in summary.get("depth", []) for tool, a in d["anchors"].items()]
    return header, rows


def chosen_load(rows: list[LoadRow]) -> dict | None:
    """The latest load that really started the engine; else the latest one (the model was loaded already)."""
    real = [r for r in rows if not r.already_loaded and not r.error]
    row = (real or rows or [None])[-1]
    return None if row is None else {**row.__dict__, "runs": len(rows)}


def summarize(meta: dict, single: list[SingleRow], parallel: list[ParallelRow], loads: list[LoadRow],
              threshold: float, parallel_tokens: int, depth: list[DepthRow] | None = None) -> dict:
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
            "depth": summarize_depth(depth or [], meta.get("anchor", [])),
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
              *ceiling_lines(s.get("ceiling") or {}),
              f"- Measured {s.get('started_at')} to {s.get('updated_at')} (UTC)", ""]
    load = s.get("load")
    if load:
        lines += ["## Load", "", tables.markdown(
            ["model", "previous model", "router load s", "load request s", "request → first token s", "note"],
            [[load["model"], load["previous_model"], load["load_seconds"], load["load_request_s"],
              load["first_token_s"], load_note(load)]], digits=2)]
    lines += ["## Single stream", "", tables.markdown(
        ["tokens", "runs", "tokens/s (median)", "min", "max", "TTFT ms", "decode tokens/s", "ceiling tokens/s",
         "% of ceiling", "ended early", "errors"],
        [[x["max_tokens"], x["runs"], x["tokens_per_s"], x["tokens_per_s_min"], x["tokens_per_s_max"],
          x["ttft_ms"], x["decode_tokens_per_s"], x.get("ceiling_tokens_per_s"), x.get("percent_of_ceiling"),
          x["ended_early"], x["errors"]] for x in s["single_stream"]])]
    if any(x.get("diffusion_steps") for x in s["single_stream"]):
        lines += ["Diffusion model: denoising steps per answer (median) by length: " + ", ".join(
            f"{x['max_tokens']} tokens: {x['diffusion_steps']:g}" for x in s["single_stream"]
            if x.get("diffusion_steps")) + ". Its tokens/s is generated tokens ÷ the whole answer's time (it "
                  "denoises every position at once, so there is no decode rate after a first token).", ""]
    if any(x.get("ceiling_tokens_per_s") for x in s["single_stream"]):
        lines += ["Ceiling: memory bandwidth ÷ bytes read per decoded token at the request's mean context (prompt "
                  "+ half the answer); % of ceiling: the decode rate's share of it.", ""]
    if s["parallel"]:
        ref = s["efficiency_reference"]
        lines += [f"## Parallel ({s['parallel_tokens']} tokens per stream)", "", tables.markdown(
            ["streams", "runs", "total tokens/s", "per-session tokens/s", "slowest session", "efficiency",
             "TTFT p50 ms", "TTFT p95 ms", "ceiling total tokens/s", "% of ceiling", "ended early", "errors"],
            [[x["parallel"], x["runs"], x["total_tokens_per_s"], x["per_session_tokens_per_s"],
              x["per_session_min_tokens_per_s"], x["efficiency"], x["ttft_p50_ms"], x["ttft_p95_ms"],
              x.get("ceiling_tokens_per_s"), x.get("percent_of_ceiling"), x["ended_early"], x["errors"]]
             for x in s["parallel"]], digits=[0, 0, 1, 1, 1, 2, 1, 1, 1, 1, 0, 0]),
            f"Efficiency: per-session tokens/s ÷ single-stream tokens/s at {ref['max_tokens']} tokens "
            f"({tables.fmt(ref['tokens_per_s'])} tokens/s).", ""]
        t = s["threshold"]
        best = (f"**{t['max_parallel']}** streams ({tables.fmt(t['per_session_tokens_per_s'])} tokens/s per "
                f"session, {tables.fmt(t['total_tokens_per_s'])} total)" if t["max_parallel"] else
                "**none** of the measured levels")
        lines += [f"Largest parallelism that keeps ≥ {t['tokens_per_s']:g} tokens/s per session: {best}.",
                  ""]
    lines += depth_lines(s)
    lines += [f"![{Path(p).stem.replace('_', ' ')}]({p})\n" for p in s.get("plots", [])]
    return "\n".join(lines)


def ceiling_lines(c: dict) -> list[str]:
    if "bandwidth" not in c:
        return [f"- Ceiling: none ({c['error']})"] if c.get("error") else []
    bw, model = c["bandwidth"], c["model"]
    measured = (f"; measured here {bw['measured_gbs']:g} GB/s ({bw['probe']})"
                if bw.get("measured_gbs") and not bw["source"].startswith("measured") else "")
    experts = (f", experts {model['experts_used']} of {model['expert_count']}" if model.get("expert_count") else "")
    return [f"- Ceiling: {model['read_bytes'] / 1e6:,.1f} MB of weights read per token{experts} + "
            f"{model['kv_bytes_per_context_token'] / 1e3:,.1f} kB of KV cache per token of context; "
            f"{bw['gbs']:g} GB/s memory bandwidth ({bw['source']}{measured}) → "
            f"{tables.fmt(c['tokens_per_s_at_context_0'])} tokens/s at context 0"]


def depth_lines(s: dict) -> list[str]:
    if not s.get("depth"):
        return []
    tools = sorted({tool for d in s["depth"] for tool in d["anchors"]})
    header = ["test", "runs", "tokens/s", "TTFT ms", "cached tokens", "ceiling tokens/s", "% of ceiling"]
    for tool in tools:
        header += [f"{tool} tokens/s", f"ours ÷ {tool}"]
    rows = [[d["name"], d["runs"], d["tokens_per_s"], d["ttft_ms"], d["cached_tokens"], d["ceiling_tokens_per_s"],
             d["percent_of_ceiling"], *[v for tool in tools for v in (d["anchors"].get(tool, {}).get("tokens_per_s"),
                                                                      d["anchors"].get(tool, {}).get("ratio"))]]
            for d in s["depth"]]
    lines = ["## Prefill and decode by context depth", "", tables.markdown(
        header, rows, digits=[0, 0, 1, 1, 0, 1, 1, *[1, 2] * len(tools)]),
        "pp N @ dD: N new prompt tokens after D cached ones (tokens ÷ TTFT); tg N @ dD: N generated tokens after D "
        "(the rate after the first token)."]
    for a in s.get("anchor", []):
        lines.append(f"{a['tool']}: " + (f"**failed**: {a['error']}" if a["error"] else
                                         "`" + "`; `".join(a["commands"]) + "`"))
    skipped = (s.get("depth_plan") or {}).get("skipped") or []
    if skipped:
        lines.append("Not run: " + "; ".join(skipped) + ".")
    return lines + [""]


def write(folder: Path, summary: dict) -> None:
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    (folder / "summary.md").write_text(markdown(summary))
    header, rows = anchor_rows(summary)
    if rows:
        tables.write_csv(folder / records.ANCHOR_CSV, header, rows)
