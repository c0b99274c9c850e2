"""Grades at their boundaries, pass rates and spread over repeats, and the ranking's order and tables, on
fixed numbers."""

from __future__ import annotations

import json
import sys

import pytest

from tests.stack import PROJECT

sys.path.insert(0, str(PROJECT / "scripts"))
from evaluation import ranking, scoring  # noqa: E402
from evaluation.suite import CATEGORIES  # noqa: E402


@pytest.mark.parametrize("percent,grade", [
    (100, "S"), (95, "S"), (94.99, "A+"), (90, "A+"), (89.99, "A"), (80, "A"), (79.99, "B+"), (75, "B+"),
    (74.99, "B"), (67, "B"), (66.99, "B-"), (60, "B-"), (59.99, "C+"), (55, "C+"), (54.99, "C"), (40, "C"),
    (39.99, "C-"), (30, "C-"), (29.99, "D"), (0, "D")])
def test_grade_boundaries(percent, grade):
    assert scoring.grade(percent) == grade


def test_grades_of_whole_checks_out_of_29():
    # 28/29 = 96.6% S, 27/29 = 93.1% A+, 26/29 = 89.7% A, 20/29 = 69.0% B, 19/29 = 65.5% B-, 8/29 = 27.6% D
    got = {n: scoring.grade(scoring.percent(n, 29)) for n in (29, 28, 27, 26, 24, 22, 20, 19, 17, 16, 12, 9, 8)}
    assert got == {29: "S", 28: "S", 27: "A+", 26: "A", 24: "A", 22: "B+", 20: "B", 19: "B-", 17: "C+",
                   16: "C+", 12: "C", 9: "C-", 8: "D"}


def test_a_rate_computed_just_under_a_boundary_still_gets_it():
    assert scoring.grade(100 * 19 / 20) == "S"  # 95.00000000000001 or 94.99999999999999, either way S
    assert scoring.grade(95 - 1e-9) == "S"


def results(*passed: bool, categories=("format", "format", "safety", "roleplay")) -> list[dict]:
    return [{"id": f"c{i}", "category": cat, "passed": p} for i, (cat, p) in enumerate(zip(categories, passed))]


def test_summary_means_and_spread_over_repeats():
    runs = [results(True, True, False, False), results(True, False, False, False), results(True, True, True, False)]
    s = scoring.summarize(runs, CATEGORIES)
    assert s["checks"] == 4 and s["repeats"] == 3
    assert s["pass_rate_per_repeat"] == [50.0, 25.0, 75.0]
    assert s["pass_rate"] == pytest.approx(50.0) and s["grade"] == "C"
    assert (s["pass_rate_min"], s["pass_rate_max"]) == (25.0, 75.0)
    assert s["pass_rate_stdev"] == pytest.approx(25.0)
    assert s["passed_mean"] == pytest.approx(2.0)
    assert list(s["categories"]) == ["format", "safety", "roleplay"]  # the suite's order, absent ones left out
    assert s["categories"]["format"] == {"title": "format", "checks": 2, "passed_mean": pytest.approx(5 / 3),
                                         "pass_rate": pytest.approx(250 / 3)}
    assert s["categories"]["roleplay"]["pass_rate"] == 0
    assert s["per_check"] == {"c0": 3, "c1": 2, "c2": 1, "c3": 0}


def test_one_run_has_no_spread():
    s = scoring.summarize([results(True, True, True, True)], CATEGORIES)
    assert s["pass_rate"] == 100 and s["grade"] == "S" and s["pass_rate_stdev"] == 0


def write_result(root, label, rate, *, remote=False, engine="vllm", complete=True, params=None, repeats=1,
                 categories=None):
    folder = root / label
    folder.mkdir(parents=True)
    data = {"schema": 1, "kind": "instruction-following", "label": label, "remote": remote, "engine": engine,
            "parameters": params, "complete": complete,
            "summary": {"checks": 29 if complete else 4, "pass_rate": rate, "pass_rate_min": rate - 1,
                        "pass_rate_max": rate + 1, "repeats": repeats, "grade": scoring.grade(rate),
                        "categories": categories or {"format": {"checks": 3, "pass_rate": rate}}}}
    (folder / "results.json").write_text(json.dumps(data))


def write_benchmark(root, label, rates: dict[int, float | None]):
    (root / label).mkdir(parents=True)
    (root / label / "summary.json").write_text(json.dumps(
        {"schema": 1, "single_stream": [{"max_tokens": n, "tokens_per_s": r} for n, r in rates.items()]}))


def test_ranking_order_pass_rate_then_speed_then_label(tmp_path):
    evals, benchmarks = tmp_path / "evals", tmp_path / "benchmarks"
    write_result(evals, "slow-good", 89.7, params=4_000_000_000)
    write_result(evals, "fast-good", 89.7, engine="llamacpp")
    write_result(evals, "no-bench-good", 89.7)
    write_result(evals, "best", 96.6, remote=True, engine="remote")
    write_result(evals, "worst", 10.3)
    write_result(evals, "subset-perfect", 100.0, complete=False)
    write_result(evals, "a-tie", 10.3)
    (evals / "_ranking").mkdir()  # the script's own output folder is not a model
    (evals / "_ranking" / "results.json").write_text("{}")
    (evals / "broken").mkdir()
    (evals / "broken" / "results.json").write_text("not json")
    write_benchmark(benchmarks, "slow-good", {64: 50.0, 1024: 38.9})
    write_benchmark(benchmarks, "fast-good", {64: 160.0, 1024: 146.1, 2048: None})  # 2048 not measured
    rows = ranking.ranked(ranking.load_results(evals), benchmarks)
    assert [r["label"] for r in rows] == ["best", "fast-good", "slow-good", "no-bench-good", "a-tie", "worst",
                                          "subset-perfect"]
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5, 6, 7]
    assert (rows[1]["tokens_per_s"], rows[1]["speed_tokens"]) == (146.1, 1024)  # the longest measured length
    assert rows[3]["tokens_per_s"] is None

    header, table = ranking.ranking_table(rows)
    assert header == ["rank", "model", "local/API", "engine", "parameters", "checks", "pass rate %", "spread %",
                      "tokens/s", "grade"]
    assert table[0] == [1, "best", "API", "remote", "–", "29", 96.6, "", None, "S"]
    assert table[2] == [3, "slow-good", "local", "vllm", "4B", "29", 89.7, "", 38.9, "A"]
    assert table[6][5] == "4 (subset)"
    assert ranking.ranking_table(rows, for_csv=True)[1][2][4] == 4_000_000_000


def test_spread_column_only_with_repeats(tmp_path):
    write_result(tmp_path, "m", 50.0, repeats=3)
    (row,) = ranking.ranked(ranking.load_results(tmp_path), None)
    assert ranking.ranking_table([row])[1][0][7] == "49.0–51.0"


def test_category_table_in_ranking_order_with_gaps(tmp_path):
    write_result(tmp_path, "full", 80.0, categories={"format": {"checks": 3, "pass_rate": 66.67},
                                                     "safety": {"checks": 6, "pass_rate": 100.0}})
    write_result(tmp_path, "part", 90.0, complete=False, categories={"safety": {"checks": 1, "pass_rate": 100.0}})
    rows = ranking.ranked(ranking.load_results(tmp_path), None)
    header, table = ranking.category_table(rows)
    assert header == ["model", "format (3)", "safety (6)"]
    assert table == [["full", 66.7, 100.0], ["part", None, 100.0]]
