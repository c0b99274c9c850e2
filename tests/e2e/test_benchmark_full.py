"""benchmark_full.py and compare_benchmarks.py run as a user runs them, against the real stack with the tiny
models at reduced sizes: llama.cpp with a model "downloaded" from a Hugging Face cache laid out offline, vLLM
with its catalog model, the router measured as a remote API through --base-url, then the comparison; and a
Ctrl-C that keeps its rows, then a resume. Both local runs measure the bandwidth, put every figure beside its
ceiling and run the depth tests; llama.cpp's also runs the real llama-bench on the same GGUF (speeds and
ratios are printed, never asserted). Both engines are left with their default models."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from tests.stack import PROJECT, Stack, wait_for
from tests.unit.test_download_model import lay_out_cache

sys.path.insert(0, str(PROJECT / "scripts"))
from bench import records, stats  # noqa: E402

pytestmark = pytest.mark.e2e
PYTHON = str(PROJECT / ".venv" / "bin" / "python")
SMALL = ["--lengths", "16", "32", "--repeats", "1", "--parallel", "2", "4", "--parallel-tokens", "32",
         # depth 512 needs a longer llama.cpp slot than the 4 × (32 + 512) tokens loaded: the reload is tested
         "--depths", "0", "512", "--prefill", "32", "--decode", "16", "--depth-repeats", "1"]
DEPTH_TESTS = ["pp32 @ d0", "tg16 @ d0", "pp32 @ d512", "tg16 @ d512"]


def command(script: str, *args: str) -> list[str]:
    return [PYTHON, str(PROJECT / "scripts" / script), *args]


def run(stack: Stack, env: dict, script: str, *args: str) -> subprocess.CompletedProcess:
    out = subprocess.run(command(script, *args), capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, f"{script} {' '.join(args)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}"
    return out


@pytest.fixture(scope="module")
def results(stack: Stack, tmp_path_factory) -> dict:
    """Every benchmark the tests read, measured once; afterwards both engines serve their default models."""
    tmp = tmp_path_factory.mktemp("bench")
    cache = tmp / "hf-cache"
    lay_out_cache(cache, "testorg/tiny-llama-a-GGUF", {
        "tiny-llama-a-Q8_0.gguf": (PROJECT / "models" / "tiny-llama-a.gguf").read_bytes(),
        "tiny-llama-a-F16.gguf": b"not this one"})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "ULLM_"))}
    env.update(ULLM_CONFIG=str(stack.config_path), ULLM_HOME=str(stack.home), HF_HUB_OFFLINE="1",
               HF_HUB_CACHE=str(cache), ROUTER_AS_REMOTE_KEY="unused-key")
    out = tmp / "benchmarks"
    common = ["--router", stack.base_url, "--output-dir", str(out), *SMALL]
    done = {"out": out, "env": env, "common": common}
    try:
        done["llamacpp"] = run(stack, env, "benchmark_full.py", "testorg/tiny-llama-a-GGUF", "--gguf", "Q8_0",
                               "--engine", "llamacpp", "--download-dir", str(stack.home / "scratch" / "hub"),
                               "--cold-load", *common)
        done["vllm"] = run(stack, env, "benchmark_full.py", "tiny-llama-a", "--engine", "vllm", *common)
    finally:
        status, body = stack.api("POST", "/v1/models/load", {"engine": "llamacpp", "model_path": "tiny-llama-a-gguf"})
        assert status == 200, body
    done["remote"] = run(stack, env, "benchmark_full.py", "tiny-llama-a-gguf", "--base-url", f"{stack.base_url}/v1",
                         "--label", "router-as-remote", "--api-key-env", "ROUTER_AS_REMOTE_KEY", "--ignore-eos",
                         *common)
    done["compare"] = run(stack, env, "compare_benchmarks.py", "--benchmarks-dir", str(out))
    return done


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


FOLDERS = {"llamacpp": "tiny-llama-a-Q8_0", "vllm": "tiny-llama-a", "remote": "router-as-remote"}
LABELS = {"llamacpp": "tiny-llama-a-Q8_0", "vllm": "tiny-llama-a", "remote": "router-as-remote (remote)"}


@pytest.mark.parametrize("which", FOLDERS)
def test_every_request_generated_exactly_the_asked_tokens(results, which):
    folder = results["out"] / FOLDERS[which]
    header, rows = read_csv(folder / "single_stream.csv")
    assert header == records.columns(records.SingleRow)
    assert sorted(int(r["max_tokens"]) for r in rows) == [16, 32]
    for row in rows:
        assert row["error"] == "" and row["ended_early"] == "False", row
        assert int(row["completion_tokens"]) == int(row["max_tokens"])  # from usage, with ignore_eos
        assert float(row["tokens_per_s"]) > 0 and float(row["ttft_ms"]) > 0 and int(row["prompt_tokens"]) > 0
        assert row["engine"] == ("remote" if which == "remote" else which)
    header, rows = read_csv(folder / "parallel.csv")
    assert header == records.columns(records.ParallelRow)
    assert sorted(int(r["parallel"]) for r in rows) == [2, 4]
    for row in rows:
        n = int(row["parallel"])
        assert (int(row["completed"]), int(row["errors"]), int(row["ended_early"])) == (n, 0, 0), row
        assert int(row["completion_tokens"]) == n * 32
        assert float(row["ttft_p95_ms"]) >= float(row["ttft_p50_ms"]) > 0
        assert float(row["total_tokens_per_s"]) > 0 and float(row["per_session_tokens_per_s"]) > 0


@pytest.mark.parametrize("which", FOLDERS)
def test_summary_and_plots(results, which):
    folder = results["out"] / FOLDERS[which]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["complete"] and not summary["interrupted"]
    assert summary["remote"] is (which == "remote")
    assert summary["machine"]["cpu_count"] == os.cpu_count() and summary["machine"]["memory_gib"] > 0
    assert summary["settings"]["ignore_eos"] and summary["settings"]["prompts"].endswith("prompts/ja.txt")
    assert [x["max_tokens"] for x in summary["single_stream"]] == [16, 32]
    assert [x["parallel"] for x in summary["parallel"]] == [2, 4]
    assert all(x["efficiency"] > 0 for x in summary["parallel"])
    # the tiny models usually stream far above 20 tokens/s, but a loaded 2-core box can starve one round:
    # the threshold result is checked against the rates measured, not against a speed
    rates = {x["parallel"]: x["per_session_tokens_per_s"] for x in summary["parallel"]}
    assert summary["threshold"]["max_parallel"] == stats.max_parallel_meeting(rates, 20)
    assert summary["plots"] == ["single_stream.png", "parallel.png"] + ([] if which == "remote" else ["depth.png"])
    for name in summary["plots"]:
        with Image.open(folder / name) as image:
            assert image.format == "PNG" and image.size[0] > 500
            image.load()
    text = (folder / "summary.md").read_text()
    assert "## Single stream" in text and "## Parallel (32 tokens per stream)" in text
    assert "![single stream](single_stream.png)" in text
    assert ("## Load" in text) is (which != "remote")


def test_llamacpp_model_downloaded_and_swapped_in_with_a_slot_per_stream(results, stack):
    assert "taking testorg/tiny-llama-a-GGUF from the local Hugging Face cache" in results["llamacpp"].stdout
    assert "unloading tiny-llama-a-gguf from llamacpp first (--cold-load)" in results["llamacpp"].stdout
    downloaded = stack.home / "scratch" / "hub" / "tiny-llama-a-Q8_0.gguf"
    assert downloaded.read_bytes() == (PROJECT / "models" / "tiny-llama-a.gguf").read_bytes()
    folder = results["out"] / FOLDERS["llamacpp"]
    (load,) = records.read(folder / "load.csv", records.LoadRow)
    assert load.error is None and load.previous_model == "tiny-llama-a-gguf" and not load.already_loaded
    assert load.cold_load
    assert load.model_path == str(downloaded) and load.model == "tiny-llama-a-Q8_0"
    assert 0 < load.load_seconds <= load.load_request_s < load.first_token_s
    assert load.options["parallel"] == 4 and load.options["ctx_size"] == 4 * (32 + 512)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["engine_status"]["options"]["parallel"] == 4 and summary["engine_status"]["pid"]


def test_vllm_model_already_loaded_is_not_restarted(results):
    (load,) = records.read(results["out"] / FOLDERS["vllm"] / "load.csv", records.LoadRow)
    assert load.already_loaded and load.load_seconds == 0 and load.previous_model == "tiny-llama-a"
    assert load.first_token_s > 0 and load.options["max_model_len"] == 2048
    assert load.model_path == str((PROJECT / "models" / "tiny-llama-a").resolve())


def test_comparison_tables_and_plots(results):
    out = results["out"] / "_comparison"
    header, rows = read_csv(out / "single_stream_ranking.csv")
    assert header == ["rank", "model", "engine", "16 tok", "32 tok", "TTFT ms @ 32"]
    assert sorted(r["model"] for r in rows) == ["router-as-remote (remote)", "tiny-llama-a", "tiny-llama-a-Q8_0"]
    assert [r["rank"] for r in rows] == ["1", "2", "3"]
    assert [float(r["32 tok"]) for r in rows] == sorted((float(r["32 tok"]) for r in rows), reverse=True)
    for name in ("parallel_total", "parallel_per_session", "parallel_efficiency"):
        header, rows = read_csv(out / f"{name}.csv")
        assert header == ["model", "engine", "2 streams", "4 streams"] and len(rows) == 3
    _, rows = read_csv(out / "parallel_threshold.csv")
    for row in rows:  # each benchmark's own result (test_summary_and_plots checks it against its rates)
        summary = json.loads((results["out"] / FOLDERS[next(k for k, v in LABELS.items() if v == row["model"])]
                              / "summary.json").read_text())
        assert row["max streams"] == str(summary["threshold"]["max_parallel"] or "")
    _, rows = read_csv(out / "engines.csv")  # the same tiny model on both engines
    assert [(r["vLLM"], r["llama.cpp"]) for r in rows] == [("tiny-llama-a", "tiny-llama-a-Q8_0")]
    text = (out / "comparison.md").read_text()
    assert "## llama.cpp against vLLM, same model" in text and "router-as-remote (remote)" in text
    for name in ("single_stream.png", "parallel_total.png", "parallel_per_session.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG"
            image.load()


def test_ctrl_c_keeps_the_rows_and_a_rerun_resumes(results, stack):
    """Ctrl-C in the middle of the single-stream phase, then the same command again."""
    folder = results["out"] / "interrupted"
    args = ["tiny-llama-a-gguf", "--router", stack.base_url, "--output-dir", str(results["out"]), "--label",
            "interrupted", "--keep-options", "--lengths", "256", "--repeats", "40", "--parallel", "--depths",
            "--no-bandwidth-probe", "--bandwidth-gbs", "10"]
    # started as from a terminal: SIGINT raises KeyboardInterrupt (a shell's background job would ignore it)
    proc = subprocess.Popen(command("benchmark_full.py", *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=results["env"],
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        wait_for(lambda: len(records.read(folder / "single_stream.csv", records.SingleRow)) >= 2
                 if (folder / "single_stream.csv").exists() else proc.poll() is not None, 120,
                 "the first single-stream rows")
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "interrupted: the rows measured so far are kept" in stderr
    kept = records.read(folder / "single_stream.csv", records.SingleRow)
    assert 2 <= len(kept) < 40
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["interrupted"] and not summary["complete"]
    assert summary["single_stream"][0]["runs"] == len(kept)
    assert "**Incomplete**" in (folder / "summary.md").read_text()

    started = time.monotonic()
    again = subprocess.run(command("benchmark_full.py", *args), capture_output=True, text=True,
                           env=results["env"], timeout=300)
    assert again.returncode == 0, again.stderr
    assert f"resuming: {len(kept)} rows already in {folder}" in again.stdout
    rows = records.read(folder / "single_stream.csv", records.SingleRow)
    assert sorted(r.repeat for r in rows) == list(range(1, 41))  # each measured once, none twice
    assert [dataclasses.asdict(r) for r in rows[:len(kept)]] == [dataclasses.asdict(r) for r in kept]
    assert all(r.completion_tokens == 256 for r in rows)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["complete"] and summary["single_stream"][0]["runs"] == 40
    assert time.monotonic() - started < 120
    assert stack.status()["llamacpp"]["model"] == "tiny-llama-a-gguf"
    assert stack.status()["vllm"]["model"] == "tiny-llama-a"


@pytest.mark.parametrize("which", ["llamacpp", "vllm"])
def test_every_figure_beside_its_ceiling(results, which):
    folder = results["out"] / FOLDERS[which]
    summary = json.loads((folder / "summary.json").read_text())
    c = summary["ceiling"]
    bw = c["bandwidth"]
    print(f"{which}: {bw['gbs']} GB/s ({bw['source']}), {c['model']['read_bytes']:,} bytes per token, "
          f"{c['tokens_per_s_at_context_0']:,.0f} tokens/s at context 0")
    assert bw["gbs"] > 0 and bw["measured_gbs"] > 0 and bw["source"].startswith("measured here: torch triad")
    assert c["model"]["source"] == ("gguf" if which == "llamacpp" else "safetensors")
    assert c["model"]["read_bytes"] > 0 and c["model"]["kv_bytes_per_context_token"] == 512  # 2 × 1 × 128 × 2
    for x in summary["single_stream"] + summary["parallel"]:
        assert x["ceiling_tokens_per_s"] > 0 and x["percent_of_ceiling"] > 0, x
    for row in read_csv(folder / "single_stream.csv")[1] + read_csv(folder / "parallel.csv")[1]:
        assert float(row["ceiling_tokens_per_s"]) > 0 and float(row["percent_of_ceiling"]) > 0
    text = (folder / "summary.md").read_text()
    assert "- Ceiling: " in text and "GB/s memory bandwidth (measured here" in text and "% of ceiling" in text


def test_a_remote_api_has_no_ceiling(results):
    summary = json.loads((results["out"] / FOLDERS["remote"] / "summary.json").read_text())
    assert "unknown" in summary["ceiling"]["error"] and summary["depth"] == [] and summary["anchor"] == []
    assert all(x["ceiling_tokens_per_s"] is None for x in summary["single_stream"])


@pytest.mark.parametrize("which", ["llamacpp", "vllm"])
def test_prefill_and_decode_by_depth(results, which):
    folder = results["out"] / FOLDERS[which]
    header, rows = read_csv(folder / "depth.csv")
    assert header == records.columns(records.DepthRow)
    assert sorted((r["test"], int(r["tokens"]), int(r["depth"])) for r in rows) == \
        [("pp", 32, 0), ("pp", 32, 512), ("tg", 16, 0), ("tg", 16, 512)]
    for row in rows:
        assert row["error"] == "" and float(row["tokens_per_s"]) > 0, row
        assert int(row["prompt_tokens"]) >= int(row["depth"]) + (32 if row["test"] == "pp" else 1)
        assert int(row["completion_tokens"]) == (1 if row["test"] == "pp" else 16)
        assert (row["ceiling_tokens_per_s"] != "") is (row["test"] == "tg")  # prefill: bound by compute
        assert row["test"] == "pp" or float(row["ceiling_tokens_per_s"]) > 0
        if which == "llamacpp" and row["depth"] == "512":
            assert int(row["cached_tokens"]) >= 512  # the depth came from the prefix cache, as llama-bench's
    summary = json.loads((folder / "summary.json").read_text())
    assert [d["name"] for d in summary["depth"]] == DEPTH_TESTS
    if which == "llamacpp":  # one slot long enough for depth 512, instead of 4 of 544 tokens
        assert summary["depth_plan"]["reloaded_with"]["parallel"] == 1
        assert summary["depth_plan"]["reloaded_with"]["ctx_size"] >= 512 + 32 + 1
    with Image.open(folder / "depth.png") as image:
        assert image.format == "PNG"
        image.load()


def test_llama_bench_on_the_same_gguf_in_the_same_run(results):
    folder = results["out"] / FOLDERS["llamacpp"]
    summary = json.loads((folder / "summary.json").read_text())
    (run,) = summary["anchor"]
    assert run["tool"] == "llama-bench" and run["error"] is None, run
    assert all(" -m " + summary["model_path"] in c and " -t " in c and " -o json" in c for c in run["commands"])
    assert {(r["test"], r["tokens"], r["depth"]) for r in run["results"]} == \
        {("pp", 32, 0), ("tg", 16, 0), ("pp", 32, 512), ("tg", 16, 512)}
    header, rows = read_csv(folder / "anchor.csv")
    assert header[:3] == ["label", "engine", "tool"] and len(rows) == 4
    for row in rows:
        print(f"{row['test']}{row['tokens']} @ d{row['depth']}: ours {float(row['tokens_per_s']):,.0f}, "
              f"llama-bench {float(row['tool_tokens_per_s']):,.0f} tokens/s, ours ÷ llama-bench "
              f"{float(row['ours_over_tool']):.2f}")
        assert float(row["tool_tokens_per_s"]) > 0 and float(row["ours_over_tool"]) > 0
    assert "ours ÷ llama-bench" in (folder / "summary.md").read_text()
    vllm = json.loads((results["out"] / FOLDERS["vllm"] / "summary.json").read_text())
    assert vllm["anchor"] == []  # vllm bench latency runs only with --vllm-bench (minutes per engine start)


def test_comparison_ranks_by_percent_of_ceiling(results):
    out = results["out"] / "_comparison"
    header, rows = read_csv(out / "ceiling_ranking.csv")
    assert header[:4] == ["rank", "model", "engine", "% of ceiling"]
    assert sorted(r["engine"] for r in rows) == ["llamacpp", "vllm"]  # not the remote one: no ceiling
    assert [float(r["% of ceiling"]) for r in rows] == sorted((float(r["% of ceiling"]) for r in rows), reverse=True)
    _, rows = read_csv(out / "depth.csv")
    assert len(rows) == 8 and {r["tool"] for r in rows if r["engine"] == "llamacpp"} == {"llama-bench"}
