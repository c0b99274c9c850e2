"""The Japanese quality report: one prompt's answers from several models side by side, as markdown and as
one self-contained HTML page (inline CSS, no scripts, nothing fetched), with the code's flags and an empty
human rating column for the reader."""

from __future__ import annotations

import html

from bench.tables import markdown as table
from evaluation.params import human

RATING = "human rating (1–5)"


def where(entry: dict) -> str:
    return "API" if entry["remote"] else entry["engine"]


def flags_text(entry: dict) -> str:
    return "; ".join(entry["flags"]) or "none"


def markdown(prompt: str, entries: list[dict], settings: dict) -> str:
    lines = ["# Japanese quality report", "", f"Prompt: **{prompt}**", "",
             f"Sampling: temperature {settings['temperature']}, top_p {settings['top_p']}, max_tokens "
             f"{settings['max_tokens']}, seed {settings['seed']}. Flags are decided by code (empty output, an answer "
             "that only repeats the question, a switch to English part-way or no Japanese at all, a repetition loop); "
             "the rating column is for the reader to fill.", "",
             table(["model", "engine", "parameters", "characters", "tokens", "flags", RATING],
                   [[e["label"], where(e), human(e.get("parameters")), len(e["judged_answer"]),
                     e.get("completion_tokens"), flags_text(e), " "] for e in entries])]
    for e in entries:
        ticks = "```"
        while ticks in e["answer"]:
            ticks += "`"
        lines += [f"## {e['label']} ({where(e)})", "",
                  f"{ticks}text\n{e['answer']}\n{ticks}" if e["answer"] else "(empty)", "",
                  f"Flags: {flags_text(e)}. {RATING}: ____", ""]
        if e["settings"] != settings:
            lines += [f"Asked {e['asked_at']} with other settings: {e['settings']}.", ""]
    return "\n".join(lines)


CSS = """
body { font-family: system-ui, "Hiragino Sans", "Noto Sans CJK JP", sans-serif; margin: 1.5rem; color: #222; }
h1 { font-size: 1.4rem; } .prompt { font-size: 1.1rem; background: #f4f4f8; padding: .6rem .8rem; }
table { border-collapse: collapse; width: 100%; table-layout: fixed; }
th, td { border: 1px solid #ccc; padding: .5rem; vertical-align: top; text-align: left; }
th { background: #f4f4f8; } .answer { white-space: pre-wrap; word-break: break-word; font-size: .95rem; }
.flag { display: inline-block; background: #fde2e1; color: #8a1c1c; border-radius: 4px; padding: 0 .4rem;
        margin: .1rem; font-size: .85rem; } .ok { color: #2a6f2a; } .rating { min-height: 2rem; background: #fffbe6; }
.meta { color: #666; font-size: .85rem; }
"""


def page(prompt: str, entries: list[dict], settings: dict) -> str:
    esc = html.escape

    def flags_html(e: dict) -> str:
        return "".join(f'<span class="flag">{esc(f)}</span>' for f in e["flags"]) or '<span class="ok">none</span>'

    heads = "".join(f"<th>{esc(e['label'])}<div class=\"meta\">{esc(where(e))}, {esc(human(e.get('parameters')))} "
                    f"parameters, {len(e['judged_answer'])} characters</div></th>" for e in entries)
    answers = "".join(f'<td class="answer">{esc(e["answer"]) or "<em>(empty)</em>"}</td>' for e in entries)
    flags = "".join(f"<td>{flags_html(e)}</td>" for e in entries)
    ratings = "".join('<td class="rating" contenteditable="true"></td>' for _ in entries)
    return f"""<!doctype html>
<html lang="ja"><head><meta charset="utf-8"><title>Japanese quality report</title>
<style>{CSS}</style></head><body>
<h1>Japanese quality report</h1>
<p class="prompt">{esc(prompt)}</p>
<p class="meta">Sampling: temperature {settings['temperature']}, top_p {settings['top_p']}, max_tokens
{settings['max_tokens']}, seed {settings['seed']}. Flags are decided by code; the rating row is for you to fill
(click a cell and type).</p>
<table>
<tr><th style="width:8rem"></th>{heads}</tr>
<tr><th>answer</th>{answers}</tr>
<tr><th>flags</th>{flags}</tr>
<tr><th>{RATING}</th>{ratings}</tr>
</table>
</body></html>
"""
