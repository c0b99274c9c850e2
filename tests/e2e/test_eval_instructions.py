"""eval_instructions.py, rank_models.py and quality_report.py run as a user runs them, against the real stack
with the tiny models: the whole suite on llama.cpp (twice, seeded), a part of it on vLLM and through
--base-url, a benchmark for tokens/s, the ranking, and the quality report across both engines and an API.
The tiny models answer gibberish, so nearly every check fails: these tests check the plumbing, the files and
the tables, never pass rates. Both engines are left with their default models."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from tests.stack import PROJECT, Stack

pytestmark = pytest.mark.e2e
PYTHON = str(PROJECT / ".venv" / "bin" / "python")
SUITE = [c["id"] for c in yaml.safe_load((PROJECT / "scripts/evaluation/checks.yaml").read_text())]


def run(env: dict, script: str, *args: str, expect: int = 0) -> subprocess.CompletedProcess:
    out = subprocess.run([PYTHON, str(PROJECT / "scripts" / script), *args], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == expect, f"{script} {' '.join(args)} → {out.returncode}:\n{out.stdout}\n{out.stderr}"
    return out


def chat_requests(stack: Stack) -> dict[tuple[str, str], float]:
    """The router's count of answered chat requests, by engine and model."""
    with urllib.request.urlopen(f"{stack.base_url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    pattern = (r'^unified_requests_total\{endpoint="chat_completions",engine="(\w+)",model="([^"]+)",'
               r'status="200"\} (\S+)$')
    return {(e, m): float(v) for e, m, v in re.findall(pattern, text, re.M)}


@pytest.fixture(scope="module")
def done(stack: Stack, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("eval")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ULLM_")}
    env.update(ULLM_CONFIG=str(stack.config_path), ULLM_HOME=str(stack.home), ROUTER_AS_REMOTE_KEY="unused-key")
    evals, again, bench = tmp / "evals", tmp / "again", tmp / "benchmarks"
    router = ["--router", stack.base_url]
    d = {"evals": evals, "again": again, "bench": bench, "env": env, "before": chat_requests(stack)}
    d["llamacpp"] = run(env, "eval_instructions.py", "tiny-llama-a-gguf", "--engine", "llamacpp", *router,
                        "--output-dir", str(evals), "--max-tokens", "24", "--repeats", "2")
    d["after_llamacpp"] = chat_requests(stack)
    run(env, "eval_instructions.py", "tiny-llama-a-gguf", *router, "--output-dir", str(again), "--max-tokens", "24",
        "--repeats", "2")
    d["vllm"] = run(env, "eval_instructions.py", "tiny-llama-a", "--engine", "vllm", *router, "--output-dir",
                    str(evals), "--max-tokens", "16", "--checks", "format", "safety", "roleplay_kansai",
                    "--concurrency", "4")
    run(env, "eval_instructions.py", "tiny-llama-a", "--engine", "vllm", *router, "--output-dir", str(again),
        "--max-tokens", "16", "--checks", "format", "safety", "roleplay_kansai", "--concurrency", "4")
    d["remote"] = run(env, "eval_instructions.py", "tiny-llama-a-gguf", "--base-url", f"{stack.base_url}/v1",
                      "--label", "router-as-remote", "--api-key-env", "ROUTER_AS_REMOTE_KEY", "--params", "808K",
                      "--output-dir", str(evals), "--max-tokens", "16", "--checks", "format_json", "persona")
    run(env, "benchmark_full.py", "tiny-llama-a-gguf", *router, "--output-dir", str(bench), "--keep-options",
        "--lengths", "16", "32", "--repeats", "1", "--parallel")
    d["rank"] = run(env, "rank_models.py", "--evals-dir", str(evals), "--benchmarks-dir", str(bench))
    quality = evals / "_quality"
    try:
        d["quality"] = run(env, "quality_report.py", "tiny-llama-b-gguf", "tiny-llama-a", *router,
                           "--output-dir", str(quality), "--max-tokens", "32")
        d["llamacpp_during_quality"] = stack.status()["llamacpp"]["model"]
    finally:
        status, body = stack.api("POST", "/v1/models/load", {"engine": "llamacpp", "model_path": "tiny-llama-a-gguf"})
        assert status == 200, body
    d["quality_remote"] = run(env, "quality_report.py", "api=tiny-llama-a-gguf", "--base-url",
                              f"{stack.base_url}/v1", "--output-dir", str(quality), "--max-tokens", "32")
    return d


def results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def test_the_whole_suite_on_llamacpp_every_answer_judged_and_counted(done, stack):
    r = results(done["evals"] / "tiny-llama-a-gguf")
    assert (r["label"], r["engine"], r["remote"], r["complete"]) == ("tiny-llama-a-gguf", "llamacpp", False, True)
    assert r["model_path"].endswith("tiny-llama-a.gguf")
    assert r["parameters"] > 100_000 and r["parameters_source"] == "gguf"
    assert r["settings"].items() >= {"temperature": 0.7, "top_p": 0.95, "max_tokens": 24, "seed": 1234,
                                     "seeds": [1234, 1235], "repeats": 2, "suite_size": 29, "concurrency": 1,
                                     "request_fields": {"engine": "llamacpp", "cache_prompt": False}}.items()
    assert [c["id"] for c in r["checks"]] == SUITE
    for check in r["checks"]:
        assert [run["repeat"] for run in check["runs"]] == [1, 2] and check["rule_text"] and check["blind_spots"]
        for run in check["runs"]:
            assert run["error"] is None and run["reason"] and isinstance(run["passed"], bool)
            assert run["answer"] and 0 < run["completion_tokens"] <= 24 and run["prompt_tokens"] > 0
    s = r["summary"]
    assert s["checks"] == 29 and s["repeats"] == 2 and len(s["pass_rate_per_repeat"]) == 2
    passed = [sum(c["runs"][i]["passed"] for c in r["checks"]) for i in (0, 1)]
    assert s["pass_rate_per_repeat"] == [100 * p / 29 for p in passed]
    assert sum(c["checks"] for c in s["categories"].values()) == 29 and len(s["categories"]) == 11
    assert s["grade"] in ("D", "C-")  # gibberish: whatever it passes by chance is a few checks
    # the router answered exactly the suite twice, on llama.cpp
    before, after = done["before"], done["after_llamacpp"]
    key = ("llamacpp", "tiny-llama-a-gguf")
    assert after[key] - before.get(key, 0) == 58
    assert "tiny-llama-a-gguf: pass rate" in done["llamacpp"].stdout and "[58/58]" in done["llamacpp"].stdout


def test_the_seed_makes_answers_reproducible_and_repeats_differ(done):
    for label in ("tiny-llama-a-gguf", "tiny-llama-a"):
        first, second = results(done["evals"] / label), results(done["again"] / label)
        answers = [[run["answer"] for run in c["runs"]] for c in first["checks"]]
        assert answers == [[run["answer"] for run in c["runs"]] for c in second["checks"]], label
    runs = results(done["evals"] / "tiny-llama-a-gguf")["checks"]
    assert any(c["runs"][0]["answer"] != c["runs"][1]["answer"] for c in runs)  # seeds 1234 and 1235


def test_markdown_report(done):
    text = (done["evals"] / "tiny-llama-a-gguf" / "results.md").read_text()
    assert text.startswith("# Instruction following: tiny-llama-a-gguf (llamacpp)")
    assert "seed 1234 (+ repeat − 1: [1234, 1235])" in text and "2 runs:" in text
    assert "| category | checks | passed | pass rate % |" in text and "| role-play | 8 |" in text
    for check in SUITE:
        assert f"| {check} |" in text and f"### {check} (" in text
    assert "> 関西弁で、今日あった出来事を友達に話すように書いてください。" in text  # the prompts are shown


def test_subset_on_vllm_and_through_base_url(done):
    r = results(done["evals"] / "tiny-llama-a")
    assert (r["engine"], r["complete"], r["parameters_source"]) == ("vllm", False, "safetensors")
    assert [c["id"] for c in r["checks"]] == ["format_json", "format_bullets", "format_numbered", "safety_harmful",
                                              "safety_illegal", "safety_personal_data", "safety_discrimination",
                                              "safety_ai_identity", "safety_jailbreak", "roleplay_kansai"]
    assert list(r["summary"]["categories"]) == ["format", "safety", "roleplay"]
    assert "**Subset**: 10 of the suite's 29 checks" in (done["evals"] / "tiny-llama-a" / "results.md").read_text()
    remote = results(done["evals"] / "router-as-remote")
    assert (remote["engine"], remote["remote"], remote["model_path"]) == ("remote", True, None)
    assert (remote["parameters"], remote["parameters_source"]) == (808_000, "--params")
    assert remote["endpoint"].endswith("/v1/chat/completions")
    assert [c["id"] for c in remote["checks"]] == ["format_json", "persona_polite", "persona_correct_misinformation",
                                                   "persona_uncertainty"]
    assert all(run["answer"] and run["error"] is None for c in remote["checks"] for run in c["runs"])


def test_a_failing_endpoint_writes_nothing(done, stack):
    out = run(done["env"], "eval_instructions.py", "no-such-model", "--base-url", f"{stack.base_url}/v1",
              "--output-dir", str(done["evals"]), "--checks", "format_json", expect=1)
    assert "the first request to" in out.stderr and "HTTP 400" in out.stderr
    assert not (done["evals"] / "no-such-model").exists()
    out = run(done["env"], "eval_instructions.py", "tiny-llama-a", "--checks", "nonsense", "--router",
              stack.base_url, expect=1)
    assert "unknown check or category ['nonsense']" in out.stderr


def test_ranking_tables(done):
    out = done["evals"] / "_ranking"
    header, rows = read_csv(out / "ranking.csv")
    assert header == ["rank", "model", "local/API", "engine", "parameters", "checks", "pass rate %", "spread %",
                      "tokens/s", "grade"]
    assert [r["rank"] for r in rows] == ["1", "2", "3"]
    by_model = {r["model"]: r for r in rows}
    assert rows[2]["model"] in ("tiny-llama-a", "router-as-remote")  # subsets rank after the whole suite
    assert rows[0]["model"] == "tiny-llama-a-gguf"
    whole = by_model["tiny-llama-a-gguf"]
    assert (whole["local/API"], whole["engine"], whole["checks"]) == ("local", "llamacpp", "29")
    assert int(whole["parameters"]) == results(done["evals"] / "tiny-llama-a-gguf")["parameters"]
    summary = json.loads((done["bench"] / "tiny-llama-a-gguf" / "summary.json").read_text())
    at_32 = next(s["tokens_per_s"] for s in summary["single_stream"] if s["max_tokens"] == 32)
    assert float(whole["tokens/s"]) == pytest.approx(at_32, abs=0.05)  # the longest length benchmarked
    assert by_model["tiny-llama-a"]["tokens/s"] == "" and by_model["router-as-remote"]["local/API"] == "API"
    assert by_model["router-as-remote"]["parameters"] == "808000"
    for r in rows:
        assert r["grade"] and float(r["pass rate %"]) >= 0
    assert whole["spread %"].count("–") == 1
    header, rows = read_csv(out / "categories.csv")
    assert header[0] == "model" and header[1:] == ["format (3)", "length (2)", "word constraints (2)", "language (1)",
                                                   "structure (1)", "audience (1)", "count (1)", "compound (1)",
                                                   "safety (6)", "persona (3)", "role-play (8)"]
    assert len(rows) == 3
    text = (out / "ranking.md").read_text()
    assert "# Instruction-following ranking (3 models)" in text and "at 32 tokens" in text
    assert "## Pass rate per category (%)" in text and text in done["rank"].stdout


class Cells(HTMLParser):
    """Collects the page's tags, attributes and table cells."""
    def __init__(self):
        super().__init__()
        self.tags, self.attrs, self.editable = [], [], 0

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += attrs
        self.editable += ("contenteditable", "true") in attrs


def test_quality_report_side_by_side(done):
    quality = done["evals"] / "_quality"
    report = json.loads((quality / "report.json").read_text())
    assert report["prompt"] == "人工知能（AI）とは何か、小学生にもわかるように説明してください"
    # this run's answer first, then the kept ones by label
    assert [(a["label"], a["engine"]) for a in report["answers"]] == [
        ("api", "remote"), ("tiny-llama-a", "vllm"), ("tiny-llama-b-gguf", "llamacpp")]
    assert done["llamacpp_during_quality"] == "tiny-llama-b-gguf"  # swapped in for the report, then swapped back
    for answer in report["answers"]:
        assert answer["answer"] and answer["error"] is None and 0 < answer["completion_tokens"] <= 32
        assert isinstance(answer["flags"], list)
    b = next(a for a in report["answers"] if a["label"] == "tiny-llama-b-gguf")
    assert b["model_path"].endswith("tiny-llama-b.gguf") and b["parameters"] > 100_000
    md = (quality / "report.md").read_text()
    assert "| model | engine | parameters | characters | tokens | flags | human rating (1–5) |" in md
    for answer in report["answers"]:
        assert f"## {answer['label']} (" in md and answer["answer"].strip() in md
    page = (quality / "report.html").read_text()
    cells = Cells()
    cells.feed(page)
    assert cells.editable == 3 and "script" not in cells.tags and "link" not in cells.tags
    assert not [v for k, v in cells.attrs if k in ("src", "href")]  # self-contained: nothing fetched
    assert "人工知能（AI）とは何か" in page and "human rating (1–5)" in page
    assert "api (API): " in done["quality_remote"].stdout
