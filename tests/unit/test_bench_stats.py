"""The benchmark's statistics on fixed numbers."""

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from bench import stats  # noqa: E402
from bench.client import StreamResult  # noqa: E402


def test_median_skips_missing_values():
    assert stats.median([3, 1, 2]) == 2
    assert stats.median([4, 1, 3, 2]) == 2.5
    assert stats.median([None, 5.0, math.nan, 7.0]) == 6.0
    assert stats.median([]) is None and stats.median([None]) is None


def test_percentile_interpolates_between_ranks():
    assert stats.percentile([1, 2, 3, 4], 50) == 2.5
    assert stats.percentile([1, 2, 3, 4], 95) == pytest.approx(3.85)
    assert stats.percentile([4, 1, 3, 2], 0) == 1 and stats.percentile([4, 1, 3, 2], 100) == 4
    assert stats.percentile([10.0], 95) == 10.0
    assert stats.percentile(list(range(1, 101)), 95) == pytest.approx(95.05)
    assert stats.percentile([], 50) is None


def test_efficiency_is_per_session_over_single_stream():
    assert stats.efficiency(25.0, 100.0) == 0.25
    assert stats.efficiency(None, 100.0) is None and stats.efficiency(25.0, None) is None
    assert stats.efficiency(25.0, 0.0) is None


def test_largest_parallelism_that_keeps_the_threshold():
    per_session = {4: 90.0, 8: 55.0, 16: 31.0, 32: 19.9, 64: 11.0}
    assert stats.max_parallel_meeting(per_session, 20) == 16
    assert stats.max_parallel_meeting(per_session, 19.9) == 32  # the threshold itself is kept
    assert stats.max_parallel_meeting(per_session, 10) == 64
    assert stats.max_parallel_meeting(per_session, 100) is None
    # a level that recovers after one that missed does not count: the rate must hold all the way up
    assert stats.max_parallel_meeting({4: 30.0, 8: 18.0, 16: 21.0}, 20) == 4
    assert stats.max_parallel_meeting({16: 21.0, 4: 30.0, 8: None}, 20) == 4  # order-free; None is a miss
    assert stats.max_parallel_meeting({}, 20) is None


def test_reference_length_for_efficiency():
    assert stats.reference_length([64, 128, 256, 512], 256) == 256
    assert stats.reference_length([64, 512], 256) == 64  # 192 away vs 256 away
    assert stats.reference_length([128, 384], 256) == 384  # a tie goes to the longer
    assert stats.reference_length([], 256) is None


def test_stream_rates_come_from_usage_and_the_clock():
    r = StreamResult(max_tokens=100, sent=10.0, first_token=10.5, ended=12.5, completion_tokens=100)
    assert r.ok and not r.ended_early
    assert r.ttft_s == 0.5 and r.elapsed_s == 2.5
    assert r.tokens_per_s == 40.0
    assert r.decode_tokens_per_s == 49.5  # 99 tokens after the first, in 2 s
    short = StreamResult(max_tokens=100, sent=0.0, first_token=0.1, ended=1.0, completion_tokens=60)
    assert short.ended_early
    failed = StreamResult(max_tokens=100, sent=0.0, ended=1.0, error="HTTP 400: too long")
    assert not failed.ok and not failed.ended_early and failed.tokens_per_s is None
    assert stats.rate(100, 2.0) == 50.0 and stats.rate(0, 2.0) is None and stats.rate(10, 0) is None
