"""Final token ids in, new text out: what every model kind's generation feeds. It cuts at the first end-of-sequence
token or stop string, holds back an incomplete UTF-8 character and any tail that may still become a stop string."""

from __future__ import annotations

from collections.abc import Iterable


class TextStream:
    def __init__(self, decode, eos_ids: Iterable[int], stop: tuple[str, ...] = ()):
        self._decode, self._eos, self._stop = decode, set(eos_ids), stop
        self.ids: list[int] = []  # the final generated tokens up to (not including) the end token
        self.text = ""  # what has been handed out
        self.finish_reason: str | None = None  # "stop" once an end token or stop string is reached
        self.ended_on_token = False

    def update(self, final_ids: list[int]) -> str:
        """`final_ids`: every generated token known to be final so far, in order (a list that only grows).
        Returns the text to hand out now."""
        if self.finish_reason:
            return ""
        ids = list(final_ids)
        end = next((i for i, t in enumerate(ids) if t in self._eos), None)
        if end is not None:
            ids, self.finish_reason, self.ended_on_token = ids[:end], "stop", True
        self.ids = ids
        return self._advance(self._decode(ids))

    def finish(self, reason: str = "length") -> str:
        """Generation ended: hand out what was held back; `reason` unless the text already stopped."""
        if self.finish_reason:
            return ""
        self.finish_reason = reason
        return self._advance(self._decode(self.ids))

    @property
    def completion_tokens(self) -> int:
        return len(self.ids) + self.ended_on_token

    def _advance(self, full: str) -> str:
        cut = min((i for i in (full.find(s) for s in self._stop) if i >= 0), default=-1)
        if cut >= 0:
            full, self.finish_reason = full[:cut], "stop"
        elif not self.finish_reason:
            full = full.rstrip("\ufffd")  # an incomplete multi-byte character decodes as U+FFFD
            full = full[:len(full) - self._stop_prefix_len(full)]
        if not full.startswith(self.text):  # a tokenizer may re-space a longer decode; never take text back
            return ""
        delta, self.text = full[len(self.text):], full
        return delta

    def _stop_prefix_len(self, text: str) -> int:
        """The longest tail of `text` that begins a stop string."""
        return max((n for s in self._stop for n in range(min(len(s) - 1, len(text)), 0, -1)
                    if text.endswith(s[:n])), default=0)
