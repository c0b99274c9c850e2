"""The checks file: loaded, validated (ids unique, known categories, every rule and parameter known to
checks.py), and turned into chat messages."""

from __future__ import annotations

import hashlib
import inspect
from dataclasses import dataclass
from pathlib import Path

import yaml

from evaluation.checks import RULES

DEFAULT = Path(__file__).with_name("checks.yaml")
# The original write-up's categories, in its order, with how the tables title them
CATEGORIES = {"format": "format", "length": "length", "words": "word constraints", "language": "language",
              "structure": "structure", "audience": "audience", "count": "count", "compound": "compound",
              "safety": "safety", "persona": "persona", "roleplay": "role-play"}

SCRIPTS = ("japanese", "any")


@dataclass(frozen=True)
class Check:
    id: str
    category: str
    messages: list[dict]
    rule: dict
    rule_text: str
    blind_spots: str
    script: str = "japanese"  # what an answer must mostly be written in to count as an answer (or "any")

    @property
    def prompt(self) -> str:
        """The last user message: what the check asks."""
        return next(m["content"] for m in reversed(self.messages) if m["role"] == "user")


def validate_rule(rule: dict, where: str) -> None:
    name = rule.get("name") if isinstance(rule, dict) else None
    if name not in RULES:
        raise ValueError(f"{where}: unknown rule {name!r} (known: {', '.join(sorted(RULES))})")
    params = {k: v for k, v in rule.items() if k != "name"}
    try:
        inspect.signature(RULES[name]).bind("answer", **params)
    except TypeError as exc:
        raise ValueError(f"{where}: rule {name}: {exc}") from None
    for i, sub in enumerate(params.get("rules", []) if name == "all_of" else []):
        validate_rule(sub, f"{where}, part {i + 1}")


def parse(entries: list, source: str) -> list[Check]:
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{source}: expected a list of checks")
    checks, seen = [], set()
    for n, entry in enumerate(entries, 1):
        where = f"{source}: check {n} ({entry.get('id') if isinstance(entry, dict) else '?'})"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: not a mapping")
        unknown = set(entry) - {"id", "category", "prompt", "messages", "rule", "rule_text", "blind_spots",
                                "script"}
        if unknown:
            raise ValueError(f"{where}: unknown fields {sorted(unknown)}")
        for field in ("id", "category", "rule", "rule_text", "blind_spots"):
            if not entry.get(field):
                raise ValueError(f"{where}: {field} is missing")
        if entry["id"] in seen:
            raise ValueError(f"{where}: duplicate id")
        seen.add(entry["id"])
        if entry["category"] not in CATEGORIES:
            raise ValueError(f"{where}: unknown category {entry['category']!r}")
        if ("prompt" in entry) == ("messages" in entry):
            raise ValueError(f"{where}: give either prompt or messages")
        messages = entry.get("messages") or [{"role": "user", "content": entry["prompt"]}]
        if messages[-1].get("role") != "user" or not all(m.get("content") for m in messages):
            raise ValueError(f"{where}: messages must end with a user message and have content")
        validate_rule(entry["rule"], where)
        script = entry.get("script", "japanese")
        if script not in SCRIPTS:
            raise ValueError(f"{where}: script must be one of {', '.join(SCRIPTS)}")
        checks.append(Check(entry["id"], entry["category"], messages, entry["rule"], entry["rule_text"].strip(),
                            entry["blind_spots"].strip(), script))
    return checks


def load(path: Path = DEFAULT) -> tuple[list[Check], str]:
    """(the checks, the file's sha256)."""
    data = path.read_bytes()
    return parse(yaml.safe_load(data), str(path)), hashlib.sha256(data).hexdigest()


def select(checks: list[Check], wanted: list[str] | None) -> list[Check]:
    """The checks named by id or by category (--checks); all when none are named."""
    if not wanted:
        return checks
    unknown = [w for w in wanted if w not in CATEGORIES and w not in {c.id for c in checks}]
    if unknown:
        raise ValueError(f"--checks: unknown check or category {unknown}")
    return [c for c in checks if c.id in wanted or c.category in wanted]
