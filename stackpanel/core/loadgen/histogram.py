"""A compact log-linear latency histogram (HdrHistogram-like, 2 significant digits).

Values are whole microseconds. Values below 128 µs have one bucket each; above, every power of
two is split into 64 linear sub-buckets, so a bucket is at most 1/64 (1.6 %) of its value wide
and a reported percentile (the bucket's midpoint, clamped to the exact min/max) is within 0.8 %
of a recorded value. One hour fits in ~1 900 buckets, a plain list of ints: recording is a few
integer operations (no numpy scalar overhead on the hot path), merging is element-wise addition,
and the object pickles small for the multi-process mode.
"""
from __future__ import annotations

import math

_SUB_BITS = 7
_LINEAR = 1 << _SUB_BITS  # 128: below this, one bucket per microsecond
_HALF = _LINEAR >> 1  # 64 sub-buckets per power of two above
_MASK = _HALF - 1

DEFAULT_MAX_US = 3_600_000_000  # one hour


def bucket_index(value_us: int) -> int:
    """The bucket holding ``value_us`` (>= 0)."""
    if value_us < _LINEAR:
        return max(0, value_us)
    shift = value_us.bit_length() - _SUB_BITS
    return ((shift + 1) << 6) | ((value_us >> shift) & _MASK)


def bucket_bounds(index: int) -> tuple[int, int]:
    """Lowest and highest microsecond value that fall into bucket ``index``."""
    if index < _LINEAR:
        return index, index
    shift = (index >> 6) - 1
    mantissa = (index & _MASK) + _HALF
    return mantissa << shift, ((mantissa + 1) << shift) - 1


class LatencyHistogram:
    """Counts of latencies in log-linear microsecond buckets, plus exact count, min, max and sum."""

    __slots__ = ("_last", "count", "counts", "max_us", "min_us", "sum_us")

    def __init__(self, highest_us: int = DEFAULT_MAX_US) -> None:
        self._last = bucket_index(highest_us)
        self.counts: list[int] = [0] * (self._last + 1)
        self.count = 0
        self.min_us = 0
        self.max_us = 0
        self.sum_us = 0

    def __getstate__(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__slots__}

    def __setstate__(self, state: dict[str, object]) -> None:
        for k, v in state.items():
            setattr(self, k, v)

    def record_us(self, value_us: int) -> None:
        value_us = max(value_us, 0)
        if value_us < _LINEAR:
            i = value_us
        else:
            shift = value_us.bit_length() - _SUB_BITS
            i = ((shift + 1) << 6) | ((value_us >> shift) & _MASK)
            i = min(i, self._last)
        self.counts[i] += 1
        if self.count == 0 or value_us < self.min_us:
            self.min_us = value_us
        self.max_us = max(self.max_us, value_us)
        self.count += 1
        self.sum_us += value_us

    def record(self, seconds: float) -> None:
        self.record_us(int(seconds * 1_000_000))

    def merge(self, other: LatencyHistogram) -> None:
        """Add ``other``'s samples to this histogram (same bucket layout or shorter)."""
        if other.count == 0:
            return
        if len(other.counts) > len(self.counts):
            self.counts.extend([0] * (len(other.counts) - len(self.counts)))
            self._last = len(self.counts) - 1
        counts = self.counts
        for i, c in enumerate(other.counts):
            if c:
                counts[i] += c
        self.min_us = other.min_us if self.count == 0 else min(self.min_us, other.min_us)
        self.max_us = max(self.max_us, other.max_us)
        self.count += other.count
        self.sum_us += other.sum_us

    def percentile_us(self, percent: float) -> float:
        """Latency at ``percent`` (0-100) in µs; NaN when empty. 100 is the exact max."""
        if self.count == 0:
            return math.nan
        if percent >= 100:
            return float(self.max_us)
        if percent <= 0:
            return float(self.min_us)
        rank = max(1, math.ceil(percent / 100.0 * self.count))
        seen = 0
        for i, c in enumerate(self.counts):
            if c:
                seen += c
                if seen >= rank:
                    low, high = bucket_bounds(i)
                    mid = (low + high) / 2.0
                    return float(min(max(mid, self.min_us), self.max_us))
        return float(self.max_us)  # pragma: no cover - counts and count always agree

    def percentile_ms(self, percent: float) -> float:
        return self.percentile_us(percent) / 1000.0

    @property
    def mean_us(self) -> float:
        return self.sum_us / self.count if self.count else math.nan

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        if not self.count:
            return "LatencyHistogram(empty)"
        return (
            f"LatencyHistogram(n={self.count}, p50={self.percentile_us(50):.0f}us, "
            f"p99={self.percentile_us(99):.0f}us, max={self.max_us}us)"
        )
