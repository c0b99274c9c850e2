"""The benchmark's rows, CSV and markdown writers, summaries, comparison tables and plots, on fixed numbers."""

import csv
import json
import sys
from pathlib import Path

import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from bench import compare, plots, records, report, tables  # noqa: E402
from bench.records import LoadRow, ParallelRow, SingleRow  # noqa: E402


def single(n, repeat, rate, ttft=50.0, error=None, early=False):
    return SingleRow("m", "vllm", "m", n, repeat, prompt_tokens=30, completion_tokens=None if error else n,
                     ended_early=early, finish_reason="length", ttft_ms=ttft, elapsed_s=n / rate if rate else None,
                     tokens_per_s=None if error else rate, decode_tokens_per_s=rate * 1.1, error=error)


def parallel(n, repeat, total, per_session, errors=0):
    return ParallelRow("m", "vllm", "m", n, repeat, 256, requests=n, completed=n - errors, errors=errors,
                       completion_tokens=256 * (n - errors), wall_s=256 * n / total if total else None,
                       total_tokens_per_s=total,
                       per_session_tokens_per_s=per_session, per_session_min_tokens_per_s=per_session * 0.9,
                       ttft_p50_ms=100.0 * n, ttft_p95_ms=150.0 * n, ttft_max_ms=160.0 * n,
                       error="HTTP 503: busy" if errors else None)


def test_rows_round_trip_through_csv(tmp_path):
    path = tmp_path / "single_stream.csv"
    rows = [single(64, 1, 100.0), single(64, 2, 0, error="HTTP 400: too long"), single(128, 1, 90.5, early=True)]
    for row in rows:
        records.append(path, row)
    with path.open() as f:
        header = next(csv.reader(f))
    assert header == ["label", "engine", "model", "max_tokens", "repeat", "prompt_tokens", "completion_tokens",
                      "ended_early", "finish_reason", "ttft_ms", "elapsed_s", "tokens_per_s", "decode_tokens_per_s",
                      "ceiling_tokens_per_s", "percent_of_ceiling", "diffusion_steps", "error", "started_at"]
    back = records.read(path, SingleRow)
    assert back[0].completion_tokens == 64 and back[0].tokens_per_s == 100.0 and back[0].ended_early is False
    assert back[1].error == "HTTP 400: too long" and back[1].completion_tokens is None
    assert back[2].ended_early is True
    assert records.done_keys(back) == {(64, 1), (128, 1)}  # the failed one is measured again on resume
    load = tmp_path / "load.csv"
    records.append(load, LoadRow("m", "llamacpp", "m", options={"ctx_size": 4096, "parallel": 4}, load_seconds=1.5))
    assert records.read(load, LoadRow)[0].options == {"ctx_size": 4096, "parallel": 4}
    with pytest.raises(ValueError, match="has columns"):
        records.read(path, ParallelRow)
    assert records.read(tmp_path / "none.csv", SingleRow) == []


def test_markdown_and_csv_tables(tmp_path):
    text = tables.markdown(["model", "tok/s", "ratio"], [["a|b", 1234.56, 0.456], ["c", 12.345, None]],
                           digits=[0, 1, 2])
    assert text.splitlines() == ["| model | tok/s | ratio |", "|---|---:|---:|", "| a\\|b | 1,235 | 0.46 |",
                                 "| c | 12.3 | – |"]
    assert tables.fmt(True) == "yes" and tables.fmt(12000) == "12,000" and tables.fmt("") == "–"
    tables.write_csv(tmp_path / "t.csv", ["model", "tok/s"], [["a", 1234.56789], ["b", None]])
    assert (tmp_path / "t.csv").read_text().splitlines() == ["model,tok/s", "a,1234.5679", "b,"]


def sample_summary(label="m", engine="vllm", scale=1.0, remote=False) -> dict:
    singles = [single(n, r, rate * scale) for n, rates in {64: [100, 104, 98], 256: [90, 95, 80]}.items()
               for r, rate in enumerate(rates, 1)]
    singles.append(single(256, 4, 0, error="timeout"))
    rounds = [parallel(4, 1, 300 * scale, 75 * scale), parallel(4, 2, 320 * scale, 80 * scale),
              parallel(16, 1, 560 * scale, 35 * scale), parallel(64, 1, 900 * scale, 14 * scale),
              parallel(64, 2, 0, 0, errors=64)]
    loads = [LoadRow(label, engine, label, load_seconds=40.0, first_token_s=41.2, previous_model="other"),
             LoadRow(label, engine, label, load_seconds=0.0, already_loaded=True, first_token_s=0.1)]
    loads = [] if remote else loads  # nothing is loaded on a remote API
    meta = {"schema": 1, "label": label, "model": label, "engine": engine, "remote": remote, "settings": {},
            "machine": {}, "complete": True}
    return report.summarize(meta, singles, rounds, loads, threshold=20, parallel_tokens=256)


def test_summary_medians_efficiency_threshold_and_load():
    s = sample_summary()
    by_len = {x["max_tokens"]: x for x in s["single_stream"]}
    assert by_len[64] == {"max_tokens": 64, "runs": 3, "tokens_per_s": 100, "tokens_per_s_min": 98,
                          "tokens_per_s_max": 104, "ttft_ms": 50.0, "decode_tokens_per_s": pytest.approx(110),
                          "ended_early": 0, "diffusion_steps": None, "errors": 0, "ceiling_tokens_per_s": None,
                          "percent_of_ceiling": None}
    assert by_len[256]["tokens_per_s"] == 90 and by_len[256]["runs"] == 3 and by_len[256]["errors"] == 1
    assert s["efficiency_reference"] == {"max_tokens": 256, "tokens_per_s": 90}
    by_n = {x["parallel"]: x for x in s["parallel"]}
    assert by_n[4]["total_tokens_per_s"] == 310 and by_n[4]["per_session_tokens_per_s"] == 77.5
    assert by_n[4]["efficiency"] == pytest.approx(77.5 / 90)
    assert by_n[64]["runs"] == 1 and by_n[64]["errors"] == 64  # the failed round is counted, not averaged in
    assert s["threshold"] == {"tokens_per_s": 20, "max_parallel": 16, "per_session_tokens_per_s": 35.0,
                              "total_tokens_per_s": 560.0}
    assert s["load"]["load_seconds"] == 40.0 and s["load"]["runs"] == 2  # the real load, not the no-op one
    md = report.markdown(s)
    assert "## Load" in md and "## Single stream" in md and "## Parallel (256 tokens per stream)" in md
    assert "| 4 | 2 | 310.0 | 77.5 | 67.5 | 0.86 | 400.0 | 600.0 | – | – | 0 | 0 |" in md
    assert "Largest parallelism that keeps ≥ 20 tokens/s per session: **16** streams" in md
    json.dumps(s)  # the summary is plain JSON


def test_comparison_tables_rank_and_pair_engines():
    summaries = [sample_summary("Qwen3-0.6B", "vllm"), sample_summary("Qwen3-0.6B-Q8_0.gguf", "llamacpp", 1.5),
                 sample_summary("gemini", "remote", 3.0, remote=True)]
    assert compare.family("Qwen3-0.6B-GGUF") == compare.family("qwen3-0.6b-Q4_K_M") == "qwen3-0.6b"
    assert compare.family("Qwen3-4B-Instruct-2507-FP8") == "qwen3-4b-instruct-2507"
    built = {t.name: t for t in compare.build(summaries)}
    ranking = built["single_stream_ranking"]
    assert ranking.title == "Single stream: tokens/s (ranked at 256 tokens)"
    assert [r[:3] for r in ranking.rows] == [[1, "gemini (remote)", "remote"], [2, "Qwen3-0.6B-Q8_0.gguf", "llamacpp"],
                                             [3, "Qwen3-0.6B", "vllm"]]
    assert ranking.header == ["rank", "model", "engine", "64 tok", "256 tok", "TTFT ms @ 256"]
    assert built["parallel_total"].header == ["model", "engine", "4 streams", "16 streams", "64 streams"]
    assert built["parallel_threshold"].rows[0][:4] == ["gemini (remote)", "remote", 20, 64]
    engines = built["engines"].rows
    assert len(engines) == 1 and engines[0][:3] == ["qwen3-0.6b", "Qwen3-0.6B", "Qwen3-0.6B-Q8_0.gguf"]
    assert engines[0][5] == pytest.approx(1.5) and engines[0][6] == 64
    paired = {t.name: t for t in compare.build(summaries[:1] + [sample_summary("lfm", "llamacpp")],
                                               pairs={"Qwen3-0.6B": "lfm"})}
    assert paired["engines"].rows[0][1:3] == ["Qwen3-0.6B", "lfm"]
    assert len(built["load"].rows) == 2  # the remote API has no load


def test_plots_are_readable_pngs(tmp_path):
    s = sample_summary()
    for path in (plots.single_stream(s, tmp_path / "single.png"), plots.parallel(s, tmp_path / "parallel.png"),
                 plots.comparison([s, sample_summary("b", "llamacpp", 2.0)], "parallel", "parallel",
                                  "total_tokens_per_s", "total tokens/s", "streams", "t", tmp_path / "cmp.png")):
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size[0] >= 600
    empty = {**s, "single_stream": [], "parallel": []}
    assert plots.single_stream(empty, tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()
