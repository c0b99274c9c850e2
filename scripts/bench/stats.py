"""The statistics of a benchmark, on plain numbers: medians, percentiles, parallel efficiency and the largest
parallelism that keeps a per-session rate."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence


def median(values: Iterable[float]) -> float | None:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(values) if values else None


def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-th percentile (0-100), interpolating linearly between the closest ranks (numpy's default):
    percentile([1, 2, 3, 4], 95) == 3.85."""
    ordered = sorted(v for v in values if v is not None and not math.isnan(v))
    if not ordered:
        return None
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def efficiency(per_session: float | None, single: float | None) -> float | None:
    """Per-session tokens/s at N streams ÷ single-stream tokens/s: 1.0 means no stream lost speed."""
    if per_session is None or not single:
        return None
    return per_session / single


def max_parallel_meeting(per_session: dict[int, float | None], threshold: float) -> int | None:
    """The largest measured N whose per-session rate, and that of every smaller measured N, is at least
    `threshold` tokens/s; None when even the smallest N misses it (or nothing was measured)."""
    best = None
    for n in sorted(per_session):
        rate = per_session[n]
        if rate is None or rate < threshold:
            break
        best = n
    return best


def reference_length(lengths: Sequence[int], wanted: int) -> int | None:
    """The measured single-stream length to compare parallel runs of `wanted` tokens with: that length, or the
    closest one (the longer on a tie)."""
    if not lengths:
        return None
    return min(lengths, key=lambda n: (abs(n - wanted), -n))


def rate(tokens: int | None, seconds: float | None) -> float | None:
    if not tokens or not seconds or seconds <= 0:
        return None
    return tokens / seconds
