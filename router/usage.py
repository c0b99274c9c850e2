"""Token usage from a relayed answer, for metrics, without parsing every streamed chunk.

Streams: the router asks engines for `stream_options.include_usage`. The usage arrives in one late event
(vLLM: a separate `"choices": []` event; llama-server: inside the last content chunk). Only events whose bytes
contain `"usage"` are parsed. When the client did not ask for usage, that extra information is removed
from what it receives, so it sees exactly what it would have seen without the router.
"""

from __future__ import annotations

import json

USAGE_MARKS = (b'"usage":{', b'"usage": {')  # compact (vLLM, llama-server) and spaced JSON


def usage_from_json(body: bytes) -> dict | None:
    try:
        usage = json.loads(body).get("usage")
    except (ValueError, AttributeError):
        return None
    return usage if isinstance(usage, dict) else None


class UsageTap:
    def __init__(self, strip: bool):
        self.strip = strip  # the client did not ask for usage: remove what we asked for on its behalf
        self.usage: dict | None = None
        self._pending = b""  # bytes after the last complete event, held until the event completes

    def feed(self, chunk: bytes) -> bytes:
        """Bytes to send on now. Complete events pass through untouched unless they carry usage."""
        if self._pending or not chunk.endswith(b"\n\n"):  # the fast path: a chunk of whole events
            data = self._pending + chunk
            cut = data.rfind(b"\n\n") + 2
            if cut < 2:
                self._pending = data
                return b""
            chunk, self._pending = data[:cut], data[cut:]
        if b'"usage"' in chunk:
            return self._take_usage(chunk)
        return chunk

    def flush(self) -> bytes:
        rest, self._pending = self._pending, b""
        return rest

    def _take_usage(self, events: bytes) -> bytes:
        out = []
        for event in events.split(b"\n\n"):
            if event.startswith(b"data: {") and any(mark in event for mark in USAGE_MARKS):
                try:
                    payload = json.loads(event[6:])
                except ValueError:
                    out.append(event)
                    continue
                if isinstance(payload.get("usage"), dict):
                    self.usage = payload["usage"]
                    if self.strip:
                        if not payload.get("choices"):
                            continue  # the usage-only event exists only because we asked for it
                        del payload["usage"]
                        event = b"data: " + json.dumps(payload, separators=(",", ":")).encode()
            out.append(event)
        return b"\n\n".join(out)
