from __future__ import annotations

import math
import pickle
import random

import pytest

from stackpanel.core.loadgen import LatencyHistogram
from stackpanel.core.loadgen.histogram import bucket_bounds, bucket_index


def test_buckets_are_contiguous_and_narrow() -> None:
    prev_high = -1
    for i in range(bucket_index(10**9) + 1):
        low, high = bucket_bounds(i)
        assert low == prev_high + 1
        assert bucket_index(low) == i and bucket_index(high) == i
        assert (high - low + 1) <= max(1, low / 64)
        prev_high = high


def test_exact_below_128us() -> None:
    h = LatencyHistogram()
    for v in range(1, 101):
        h.record_us(v)
    assert h.percentile_us(50) == 50
    assert h.percentile_us(90) == 90
    assert h.percentile_us(99) == 99
    assert h.percentile_us(100) == 100
    assert h.mean_us == pytest.approx(50.5)


def test_percentiles_match_sorted_samples_within_one_percent() -> None:
    rng = random.Random(7)
    samples = [int(rng.lognormvariate(7, 1.2)) for _ in range(50_000)]  # ~1 ms median, long tail
    h = LatencyHistogram()
    for s in samples:
        h.record_us(s)
    ordered = sorted(samples)
    for p in (50, 90, 99, 99.9):
        exact = ordered[math.ceil(p / 100 * len(ordered)) - 1]
        assert h.percentile_us(p) == pytest.approx(exact, rel=0.01)
    assert h.percentile_us(100) == max(samples)
    assert h.max_us == max(samples) and h.min_us == min(samples)
    assert h.count == len(samples)


def test_empty_histogram_gives_nan() -> None:
    h = LatencyHistogram()
    assert math.isnan(h.percentile_ms(50)) and math.isnan(h.mean_us)


def test_record_seconds_and_clamping() -> None:
    h = LatencyHistogram(highest_us=1_000_000)
    h.record(0.0025)  # 2.5 ms
    h.record_us(-5)
    h.record_us(10**12)  # beyond the range: lands in the last bucket, max stays exact
    assert h.count == 3
    assert h.max_us == 10**12
    assert h.percentile_us(100) == 10**12
    assert h.min_us == 0
    assert h.percentile_us(50) == pytest.approx(2500, rel=0.01)


def test_merge_equals_recording_everything_in_one() -> None:
    rng = random.Random(1)
    a, b, both = LatencyHistogram(), LatencyHistogram(), LatencyHistogram()
    for i in range(10_000):
        v = rng.randrange(50, 200_000)
        (a if i % 3 else b).record_us(v)
        both.record_us(v)
    a.merge(b)
    assert a.counts == both.counts
    assert (a.count, a.min_us, a.max_us, a.sum_us) == (both.count, both.min_us, both.max_us, both.sum_us)
    empty = LatencyHistogram()
    empty.merge(a)
    assert empty.percentile_us(99) == both.percentile_us(99)


def test_pickles_for_process_mode() -> None:
    h = LatencyHistogram()
    for v in (100, 2000, 30000):
        h.record_us(v)
    h2 = pickle.loads(pickle.dumps(h))
    assert h2.counts == h.counts and h2.count == 3 and h2.percentile_us(50) == h.percentile_us(50)
    assert len(pickle.dumps(h)) < 20_000
