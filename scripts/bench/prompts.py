"""The prompts a benchmark sends: one per line of a text file (Japanese by default, as the original write-up
measured), taken in turn so that reruns send the same ones."""

from __future__ import annotations

import hashlib
from pathlib import Path

DEFAULT = Path(__file__).resolve().parent.parent / "prompts" / "ja.txt"


class Prompts:
    def __init__(self, path: Path):
        self.path = path
        text = path.read_text(encoding="utf-8")
        self.lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
        if not self.lines:
            raise ValueError(f"{path} has no prompts (one per line; # starts a comment)")
        self.sha256 = hashlib.sha256(text.encode()).hexdigest()

    def __getitem__(self, index: int) -> str:
        return self.lines[index % len(self.lines)]

    def __len__(self) -> int:
        return len(self.lines)
