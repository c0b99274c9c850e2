"""The failure modes the original write-up found by reading answers, flagged by code: empty output, an
answer that only repeats the question, a switch to English part-way (or no Japanese to begin with), and
degenerate repetition loops."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from difflib import SequenceMatcher

from evaluation import text as t

PUNCTUATION = re.compile(r"[\s、。，．,.!！?？「」『』（）()・:：\-*#]+")
LOOP = re.compile(r"(.{2,60}?)\1{3,}", re.S)  # a piece of text repeated at least 4 times in a row
WINDOW = 40  # letters per window when looking for a switch to English


def _bare(text: str) -> str:
    return PUNCTUATION.sub("", t.halfwidth(text)).lower()


def repeats_question(answer: str, question: str) -> bool:
    """The answer is the question again (punctuation and spacing aside), or little more than it: what is
    left after removing the question is under 10 characters, or the two are ≥ 80% alike."""
    a, q = _bare(answer), _bare(question)
    if not a or not q:
        return False
    if len(a.replace(q, "")) < 10:
        return True
    return SequenceMatcher(None, a, q, autojunk=False).ratio() >= 0.8


def english_switch(answer: str) -> int | None:
    """Where an answer that began in Japanese turns into English: the character offset of the first window
    of 40 letters (kana, kanji and Latin letters) that is at least 80% Latin, after at least 20 Japanese
    characters. None when it never switches (an answer in English from the start is not a switch)."""
    letters = [(i, t.script_of(c)) for i, c in enumerate(answer)]
    letters = [(i, s) for i, s in letters if s in ("latin", "kanji", "hiragana", "katakana")]
    japanese_seen = 0
    for n, (offset, script) in enumerate(letters):
        window = letters[n:n + WINDOW]
        if japanese_seen >= 20 and len(window) == WINDOW and \
                sum(s == "latin" for _, s in window) >= 0.8 * WINDOW and script == "latin":
            return offset
        japanese_seen += script != "latin"
    return None


def japanese_share(answer: str) -> float | None:
    """Kana and kanji as a share of the letters (Latin included); None when there are no letters."""
    counts = t.scripts(answer)
    letters = t.japanese_chars(counts) + counts["latin"]
    return t.japanese_chars(counts) / letters if letters else None


@dataclass(frozen=True)
class Loop:
    piece: str  # what repeats
    times: int  # how often, in a row (a piece) or in all (a line)
    line: bool  # a whole line that recurs, rather than a piece repeated in a row


def find_loop(answer: str) -> Loop | None:
    """A degenerate loop: a piece of 2–60 characters (not only spaces or punctuation) repeated at least 4
    times in a row over 12+ characters, or a line of 5+ characters that occurs 3 times or more. The piece that
    covers the most text wins (a whole line, on a tie)."""
    found = []
    for match in LOOP.finditer(answer):
        piece = match.group(1)
        if _bare(piece) and len(match.group(0)) >= 12:
            whole_line = piece.endswith("\n") and piece.count("\n") == 1
            found.append(Loop(piece.strip() if whole_line else piece, len(match.group(0)) // len(piece), whole_line))
    lines = Counter(ln.strip() for ln in answer.splitlines() if len(ln.strip()) >= 5)
    found += [Loop(line, n, line=True) for line, n in lines.items() if n >= 3]
    return max(found, key=lambda loop: (len(loop.piece) * loop.times, loop.line), default=None)


def repetition_loop(answer: str) -> str | None:
    """The repeated piece of a degenerate loop (find_loop), or None."""
    loop = find_loop(answer)
    return loop.piece if loop else None


def flag(answer: str, question: str) -> list[str]:
    """The failure modes found in an answer (thinking removed first), as short labels."""
    answer = t.strip_thinking(answer)
    if not answer:
        return ["empty"]
    found = []
    if repeats_question(answer, question):
        found.append("repeats the question")
    switch = english_switch(answer)
    if switch is not None:
        found.append(f"switches to English at character {switch}")
    elif (share := japanese_share(answer)) is not None and share < 0.5:
        found.append(f"not Japanese ({share:.0%} of the letters)")
    loop = repetition_loop(answer)
    if loop is not None:
        found.append(f"repetition loop: {loop[:30]!r}")
    return found
