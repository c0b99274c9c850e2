"""From pass/fail results to pass rates, the spread over repeats, and the grade."""

from __future__ import annotations

import statistics

# (lowest pass rate in percent, grade), best first: S ≥ 95%, A+ ≥ 90% … D below 30%
GRADES = [(95, "S"), (90, "A+"), (80, "A"), (75, "B+"), (67, "B"), (60, "B-"), (55, "C+"), (40, "C"), (30, "C-")]


def grade(percent: float) -> str:
    """The grade of a pass rate in percent. Rounded to 6 decimals first, so 95.0 computed as 94.99999… is S."""
    percent = round(percent, 6)
    return next((g for floor, g in GRADES if percent >= floor), "D")


def percent(passed: int, total: int) -> float:
    return 100.0 * passed / total if total else 0.0


def summarize(runs: list[list[dict]], categories: dict[str, str]) -> dict:
    """runs: one list of results ({id, category, passed}) per repeat, the same checks in each. Pass rates
    are means over the repeats; the spread is the repeats' min, max and standard deviation."""
    per_run = [percent(sum(r["passed"] for r in run), len(run)) for run in runs]
    first = runs[0]
    category_rows = {}
    for key, title in categories.items():
        ids = [r["id"] for r in first if r["category"] == key]
        if not ids:
            continue
        passes = [sum(r["passed"] for r in run if r["id"] in ids) for run in runs]
        category_rows[key] = {"title": title, "checks": len(ids), "passed_mean": statistics.fmean(passes),
                              "pass_rate": percent(statistics.fmean(passes), len(ids))}
    mean = statistics.fmean(per_run)
    return {"checks": len(first), "repeats": len(runs), "pass_rate": mean, "grade": grade(mean),
            "passed_mean": statistics.fmean(sum(r["passed"] for r in run) for run in runs),
            "pass_rate_per_repeat": per_run, "pass_rate_min": min(per_run), "pass_rate_max": max(per_run),
            "pass_rate_stdev": statistics.stdev(per_run) if len(per_run) > 1 else 0.0,
            "categories": category_rows,
            "per_check": {r["id"]: sum(run[i]["passed"] for run in runs) for i, r in enumerate(first)}}
