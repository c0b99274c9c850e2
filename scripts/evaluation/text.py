"""Reading Japanese answers: thinking blocks removed, full-width ASCII folded, scripts counted, sentences and
list items found. Characters are Unicode code points, never bytes."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

THINK_BLOCK = re.compile(r"<think>.*?</think>", re.S)
# Full-width ASCII (！ to ～) and the ideographic space, folded to ASCII: "１２３" → "123", "Ａ" → "A"
_HALFWIDTH = {c: c - 0xFEE0 for c in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}
LATIN = re.compile(r"[A-Za-z]")
BULLET = re.compile(r"^(\s*)(?:[-*+](?=\s)|[•・●○■□◆◇▪►▶✓✔])\s*(\S.*)$")
NUMBERED = re.compile(r"^(\s*)(?:\*\*)?(?:(\d{1,2})\s*[.)、]|\((\d{1,2})\)|([①-⑳]))(?:\*\*)?\s*(\S.*)$")
SENTENCE_END = re.compile(r"(?<=[。！？!?])|\n")
CLOSERS = "」』）)】〕\"'”’!！?？。．.、…〜～ー♪☆★♡♥*_ \t"


def strip_thinking(text: str | None) -> str:
    """The answer without <think>…</think> blocks; a block never closed (the model ran out of tokens while
    thinking) leaves nothing; text before a lone </think> (the template opened the block) is thinking too."""
    text = THINK_BLOCK.sub("", text or "")
    if "<think>" in text:
        text = text.split("<think>", 1)[0]
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    return text.strip()


def halfwidth(text: str) -> str:
    return text.translate(_HALFWIDTH)


def script_of(char: str) -> str:
    code = ord(char)
    if 0x3041 <= code <= 0x309F:
        return "hiragana"
    if 0x30A0 <= code <= 0x30FF or 0x31F0 <= code <= 0x31FF or 0xFF66 <= code <= 0xFF9F:
        return "katakana"
    if 0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF or 0xF900 <= code <= 0xFAFF or char in "々〆":
        return "kanji"
    folded = halfwidth(char)
    if LATIN.fullmatch(folded):
        return "latin"
    if folded.isdigit():
        return "digit"
    return "space" if char.isspace() else "other"


def scripts(text: str) -> Counter:
    """Characters per script: kanji, hiragana, katakana, latin (full-width letters included), digit, space,
    other (punctuation, symbols, other alphabets)."""
    return Counter(script_of(c) for c in text)


def japanese_chars(counts: Counter) -> int:
    return counts["kanji"] + counts["hiragana"] + counts["katakana"]


def char_count(text: str) -> int:
    """Characters as a Japanese writer counts them: every character but whitespace (punctuation counts)."""
    return sum(1 for c in text if not c.isspace())


def latin_words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z]+", halfwidth(text))


def sentences(text: str) -> list[str]:
    """Sentences: split after 。！？!? and at line ends; empty pieces dropped."""
    return [s.strip() for s in SENTENCE_END.split(text) if s and s.strip()]


def ending(sentence: str) -> str:
    """A sentence without its closing punctuation, brackets and decorations: what its predicate ends with."""
    return sentence.rstrip(CLOSERS)


def outside_quotes(text: str) -> str:
    """The text with 「…」 and 『…』 dialogue removed."""
    return re.sub(r"「[^」]*」|『[^』]*』", "", text)


@dataclass
class Item:
    indent: int
    text: str
    number: int | None  # None for a bullet


def list_items(text: str) -> tuple[list[Item], list[Item]]:
    """(bullet items, numbered items) at the top level: lines with the smallest indentation of their kind, so
    nested sub-items are not counted. Full-width digits count ("１．"), and so do ①–⑳ and (1)."""
    bullets, numbered = [], []
    for line in halfwidth(text).splitlines():
        match = NUMBERED.match(line)
        if match:
            indent, a, b, circled, body = match.groups()
            number = int(a or b) if (a or b) else ord(circled) - 0x245F
            numbered.append(Item(len(indent.expandtabs(4)), body.strip(), number))
            continue
        match = BULLET.match(line)
        if match:
            bullets.append(Item(len(match.group(1).expandtabs(4)), match.group(2).strip(), None))
    return _top(bullets), _top(numbered)


def _top(items: list[Item]) -> list[Item]:
    if not items:
        return items
    least = min(i.indent for i in items)
    return [i for i in items if i.indent == least]
