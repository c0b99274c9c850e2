"""The original write-up's ranking tables across benchmarks, from their summary.json files: single-stream
ranking, parallel total and per-session tokens/s, efficiency, the largest parallelism that keeps the
threshold, load times, llama.cpp against vLLM for the same model, and the rankings by percent of the
memory-bandwidth ceiling (single stream and by context depth, beside the engine's own tool), which judge a
quantized GGUF and a bf16 folder, or two machines, on the same footing."""

from __future__ import annotations

import re
from dataclasses import dataclass

from bench import report

QUANT = re.compile(r"[-_.](?:i?q\d\w*|f16|bf16|f32|fp16|fp8|awq|gptq|int4|int8|mxfp4|gguf)$", re.IGNORECASE)


@dataclass
class Table:
    name: str  # CSV file stem
    title: str
    header: list[str]
    rows: list[list]
    note: str = ""
    digits: int | list[int] = 1  # decimals of small numbers, for all columns or per column


def family(label: str) -> str:
    """The model a label names, without its format and quantization: Qwen3-0.6B-GGUF, qwen3-0.6b-Q8_0 and
    Qwen3-0.6B are one family."""
    name = label.lower().removesuffix(".gguf")
    while (shorter := QUANT.sub("", name)) != name:
        name = shorter
    return name


def name(s: dict) -> str:
    return s["label"] + (" (remote)" if s.get("remote") else "")


def by(entries: list[dict], key: str) -> dict:
    return {e[key]: e for e in entries}


def rank_length(summaries: list[dict], wanted: int | None) -> int | None:
    """The length to rank single streams by: `wanted`, else the longest of those measured by the most
    benchmarks (all of them, when they used the same lengths)."""
    if wanted:
        return wanted
    counts: dict[int, int] = {}
    for s in summaries:
        for x in s["single_stream"]:
            if x["tokens_per_s"] is not None:
                counts[x["max_tokens"]] = counts.get(x["max_tokens"], 0) + 1
    return max(counts, key=lambda n: (counts[n], n), default=None)


def single_ranking(summaries: list[dict], length: int | None) -> Table:
    lengths = sorted({x["max_tokens"] for s in summaries for x in s["single_stream"]})

    def at(s: dict, n: int | None, key: str = "tokens_per_s"):
        return by(s["single_stream"], "max_tokens").get(n, {}).get(key)
    ranked = sorted(summaries, key=lambda s: -(at(s, length) or -1))
    rows = [[i + 1, name(s), s["engine"], *[at(s, n) for n in lengths], at(s, length, "ttft_ms")]
            for i, s in enumerate(ranked)]
    return Table("single_stream_ranking", f"Single stream: tokens/s (ranked at {length} tokens)",
                 ["rank", "model", "engine", *[f"{n} tok" for n in lengths], f"TTFT ms @ {length}"], rows)


def ceiling_ranking(summaries: list[dict], length: int | None) -> Table:
    """Single stream at `length` ranked by the decode rate's percent of the ceiling."""
    rows = []
    for s in summaries:
        x = by(s["single_stream"], "max_tokens").get(length, {})
        bw = (s.get("ceiling") or {}).get("bandwidth") or {}
        if x.get("ceiling_tokens_per_s"):
            rows.append([name(s), s["engine"], x["percent_of_ceiling"], x["decode_tokens_per_s"],
                         x["ceiling_tokens_per_s"], x["tokens_per_s"], bw.get("gbs"),
                         (s["ceiling"]["model"]["read_bytes"]) / 1e6])
    rows.sort(key=lambda r: -(r[2] or -1))
    rows = [[i + 1, *r] for i, r in enumerate(rows)]
    return Table("ceiling_ranking", f"Single stream: percent of the memory-bandwidth ceiling ({length} tokens)",
                 ["rank", "model", "engine", "% of ceiling", "decode tok/s", "ceiling tok/s", "tok/s",
                  "bandwidth GB/s", "MB read per token"], rows,
                 "Ceiling: bandwidth ÷ (weights read per token + KV cache at the mean context); the bandwidth is "
                 "each benchmark's own (see its summary for where it came from).", digits=[0, 1, 1, 1, 1, 1, 1, 1, 1])


def depth_table(summaries: list[dict]) -> Table:
    """Every depth test of every benchmark, tg ranked by percent of ceiling, with ours ÷ the engine's tool."""
    rows = []
    for s in summaries:
        for d in s.get("depth", []):
            tool, a = next(iter(d["anchors"].items()), (None, {}))
            rows.append([name(s), s["engine"], d["name"], d["tokens_per_s"], d["ceiling_tokens_per_s"],
                         d["percent_of_ceiling"], tool, a.get("tokens_per_s"), a.get("ratio")])
    rows.sort(key=lambda r: (r[2].split(" @ d")[0], int(r[2].split(" @ d")[1]), -(r[5] or -1), -(r[3] or -1)))
    return Table("depth", "Prefill and decode by context depth (ranked by % of ceiling, then tokens/s)",
                 ["model", "engine", "test", "tok/s", "ceiling tok/s", "% of ceiling", "tool", "tool tok/s",
                  "ours ÷ tool"], rows, digits=[1, 1, 1, 1, 1, 1, 1, 1, 2])


def parallel_table(summaries: list[dict], key: str, stem: str, title: str) -> Table:
    levels = sorted({x["parallel"] for s in summaries for x in s["parallel"]})
    rows = [[name(s), s["engine"], *[by(s["parallel"], "parallel").get(n, {}).get(key) for n in levels]]
            for s in summaries if s["parallel"]]
    rows.sort(key=lambda r: -max((v for v in r[2:] if v is not None), default=-1))
    return Table(stem, title, ["model", "engine", *[f"{n} streams" for n in levels]], rows,
                 digits=2 if key == "efficiency" else 1)


def threshold_table(summaries: list[dict]) -> Table:
    values = sorted({s["threshold"]["tokens_per_s"] for s in summaries if s["parallel"]})
    rows = [[name(s), s["engine"], s["threshold"]["tokens_per_s"], s["threshold"]["max_parallel"],
             s["threshold"]["per_session_tokens_per_s"], s["threshold"]["total_tokens_per_s"],
             max((x["parallel"] for x in s["parallel"]), default=None)] for s in summaries if s["parallel"]]
    rows.sort(key=lambda r: (-(r[3] or 0), -(r[5] or 0)))
    shown = "/".join(f"{v:g}" for v in values) or "20"
    return Table("parallel_threshold", f"Largest parallelism keeping ≥ {shown} tokens/s per session",
                 ["model", "engine", "threshold tok/s", "max streams", "per-session tok/s", "total tok/s",
                  "largest measured"], rows,
                 "max streams: the largest measured N at which this and every smaller level kept the threshold.")


def load_table(summaries: list[dict]) -> Table:
    rows = [[name(s), s["engine"], s["load"]["previous_model"], s["load"]["load_seconds"],
             s["load"]["first_token_s"], report.load_note(s["load"])]
            for s in summaries if s.get("load")]
    return Table("load", "Load time", ["model", "engine", "previous model", "router load s",
                                       "request → first token s", "note"], rows, digits=2)


def engines_table(summaries: list[dict], length: int | None, pairs: dict[str, str]) -> Table:
    """llama.cpp against vLLM where the same model was measured on both (same family, or --pair)."""
    vllm = [s for s in summaries if s["engine"] == "vllm"]
    cpp = [s for s in summaries if s["engine"] == "llamacpp"]
    rows = []
    for v in vllm:
        partner = pairs.get(v["label"])
        for c in cpp:
            if (partner == c["label"]) if partner else family(c["label"]) == family(v["label"]):
                rows.append(compare_pair(v, c, length))
    return Table("engines", "llama.cpp against vLLM, same model", [
        "model", "vLLM", "llama.cpp", f"vLLM tok/s @ {length}", f"llama.cpp tok/s @ {length}", "llama.cpp ÷ vLLM",
        "streams", "vLLM total tok/s", "llama.cpp total tok/s", "llama.cpp ÷ vLLM (total)"], rows,
        digits=[1, 1, 1, 1, 1, 2, 0, 1, 1, 2])


def compare_pair(v: dict, c: dict, length: int | None) -> list:
    vs = by(v["single_stream"], "max_tokens").get(length, {}).get("tokens_per_s")
    cs = by(c["single_stream"], "max_tokens").get(length, {}).get("tokens_per_s")
    common = sorted(set(by(v["parallel"], "parallel")) & set(by(c["parallel"], "parallel")))
    n = common[-1] if common else None
    vt = by(v["parallel"], "parallel").get(n, {}).get("total_tokens_per_s")
    ct = by(c["parallel"], "parallel").get(n, {}).get("total_tokens_per_s")
    return [family(v["label"]), v["label"], c["label"], vs, cs, ratio(cs, vs), n, vt, ct, ratio(ct, vt)]


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def build(summaries: list[dict], length: int | None = None, pairs: dict[str, str] | None = None) -> list[Table]:
    length = rank_length(summaries, length)
    return [single_ranking(summaries, length), ceiling_ranking(summaries, length), depth_table(summaries),
            parallel_table(summaries, "total_tokens_per_s", "parallel_total", "Parallel: total tokens/s"),
            parallel_table(summaries, "per_session_tokens_per_s", "parallel_per_session",
                           "Parallel: per-session tokens/s"),
            parallel_table(summaries, "efficiency", "parallel_efficiency",
                           "Parallel efficiency (per-session ÷ single-stream tokens/s)"),
            threshold_table(summaries), load_table(summaries), engines_table(summaries, length, pairs or {})]
