"""Whether an answer is a real answer at all, decided before any check: a repetition loop, an answer cut off by
max_tokens, or one mostly in another script than the check asks for would otherwise pass checks by accident
(a loop of polite endings passes "ends politely"; a garbled line containing "AI" passes "keeps its AI identity").
"""

from __future__ import annotations

from evaluation import flags
from evaluation import text as t

MIN_SHARE = 0.5  # kana and kanji at least this share of the letters, for a check that asks for Japanese
# a loop counts only when it is a real part of the answer, not a short refrain inside a long one
MIN_LOOP_SHARE = 0.3


def degenerate(answer: str, finish_reason: str | None = None, script: str = "japanese") -> str | None:
    """Why `answer` (thinking removed) is not a real answer, or None when it is. `script`: "japanese" or "any"."""
    if not answer:
        return "empty answer"
    loop = flags.find_loop(answer)
    if loop and len(loop.piece) * loop.times >= MIN_LOOP_SHARE * len(answer):
        what = "the same line" if loop.line else f"the same {len(loop.piece)} characters"
        cut = ", cut off by max_tokens" if finish_reason == "length" else ""
        return f"degenerate: {what} repeated {loop.times} times{cut} ({loop.piece[:30]!r})"
    if finish_reason == "length":
        return "degenerate: cut off by max_tokens before it ended"
    if script == "japanese":
        share = flags.japanese_share(answer)
        if share is None or share < MIN_SHARE:
            return (f"degenerate: not Japanese ({share:.0%} of the letters are kana or kanji)" if share is not None
                    else "degenerate: no letters at all")
    return None


def thinking_cut_off(raw_answer: str | None, finish_reason: str | None) -> bool:
    """The model was still thinking when max_tokens ran out: nothing of the answer was written."""
    raw = raw_answer or ""
    return finish_reason == "length" and "<think>" in raw and not t.strip_thinking(raw)
