"""An evaluation's results as results.json (everything) and results.md (tables, then every prompt and
answer) in evals/<label>/."""

from __future__ import annotations

import json
from pathlib import Path

from bench.tables import markdown as table
from evaluation.params import human

RESULTS_JSON, RESULTS_MD = "results.json", "results.md"


def spread(summary: dict) -> str:
    if summary["repeats"] < 2:
        return "one run"
    return (f"{summary['repeats']} runs: {summary['pass_rate_min']:.1f}–{summary['pass_rate_max']:.1f}%, "
            f"standard deviation {summary['pass_rate_stdev']:.1f} points")


def fence(text: str) -> str:
    ticks = "```"
    while ticks in text:
        ticks += "`"
    return f"{ticks}text\n{text}\n{ticks}"


def quote(text: str) -> str:
    return "\n".join("> " + line for line in text.splitlines())


def markdown(r: dict) -> str:
    s, settings = r["summary"], r["settings"]
    where = "remote API" if r["remote"] else r["engine"]
    lines = [f"# Instruction following: {r['label']} ({where})", ""]
    if not r["complete"]:
        lines += [f"**Subset**: {s['checks']} of the suite's {settings['suite_size']} checks (--checks).", ""]
    lines += [f"- Model: `{r['model']}`" + (f", path `{r['model_path']}`" if r.get("model_path") else "")
              + (f", {human(r['parameters'])} parameters ({r['parameters_source']})" if r.get("parameters") else ""),
              f"- Endpoint: {r['endpoint']}",
              f"- Sampling: temperature {settings['temperature']}, top_p {settings['top_p']}, max_tokens "
              f"{settings['max_tokens']}, seed {settings['seed']}"
              + (f" (+ repeat − 1: {settings['seeds']})" if len(settings["seeds"]) > 1 else "")
              + (f"; with every request: `{json.dumps(settings['request_fields'])}`"
                 if settings.get("request_fields") else ""),
              f"- Checks: `{settings['checks_file']}` (sha256 {settings['checks_sha256'][:12]}), decided by code",
              f"- Run {r['started_at']} to {r['finished_at']} (UTC)", "",
              f"**Pass rate {s['pass_rate']:.1f}% ({s['passed_mean']:g} of {s['checks']}), grade {s['grade']}** "
              f"({spread(s)}).", "", "## Per category", "",
              table(["category", "checks", "passed", "pass rate %"],
                    [[c["title"], c["checks"], round(c["passed_mean"], 2) if s["repeats"] > 1 else
                      int(c["passed_mean"]), c["pass_rate"]]
                     for c in s["categories"].values()]),
              "## Per check", "",
              table(["check", "category", "passed", "reason" + (" (repeat 1)" if s["repeats"] > 1 else "")],
                    [[c["id"], c["category"], f"{s['per_check'][c['id']]}/{s['repeats']}",
                      c["runs"][0]["reason"]] for c in r["checks"]]),
              "## Answers" + (" (repeat 1; every repeat is in results.json)" if s["repeats"] > 1 else ""), ""]
    for c in r["checks"]:
        run = c["runs"][0]
        lines += [f"### {c['id']} ({c['category']}): {'PASS' if run['passed'] else 'FAIL'}", ""]
        for message in c["messages"]:
            lines += [f"**{message['role']}**:", "", quote(message["content"]), ""]
        lines += ["**answer**" + (f" (finish: {run['finish_reason']}, {run['completion_tokens']} tokens)"
                                  if run.get("completion_tokens") is not None else "") + ":", "",
                  fence(run["answer"]) if run["answer"] else "(empty)", "",
                  f"Rule: {c['rule_text']} → {run['reason']}", "", f"Blind spots: {c['blind_spots']}", ""]
    return "\n".join(lines)


def write(folder: Path, results: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RESULTS_JSON).write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    (folder / RESULTS_MD).write_text(markdown(results))
