"""Fixed-capacity, numpy-backed time series for plotting.

:class:`TimeSeriesRing` stores ``capacity`` samples of ``(timestamp, value[channels])``. Memory is
allocated once at construction. Storage is *mirrored*: each sample is written twice, at ``i`` and
``i + capacity``, so the most recent ``n`` samples are always one contiguous slice and
:meth:`TimeSeriesRing.view` returns numpy views, never a copy. Append is O(1) (two row writes).

Views alias the internal storage: they are valid until the next :meth:`append`. Use
:meth:`TimeSeriesRing.copy_view` (read-only copies) to hand data to another thread.

Not thread-safe: one writer, and readers on the same thread (the metrics engine copies under
its own lock).
"""
from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

#: The default history: 15 minutes at 1 Hz.
DEFAULT_HISTORY_SECONDS = 900.0
DEFAULT_RATE_HZ = 1.0
MAX_RATE_HZ = 10.0


def capacity_for(history_seconds: float = DEFAULT_HISTORY_SECONDS, rate_hz: float = DEFAULT_RATE_HZ) -> int:
    """Number of samples needed to hold ``history_seconds`` at ``rate_hz`` (0 < rate ≤ 10 Hz)."""
    if not (0 < rate_hz <= MAX_RATE_HZ):
        raise ValueError(f"sample rate must be in (0, {MAX_RATE_HZ}] Hz, got {rate_hz}")
    if history_seconds <= 0:
        raise ValueError(f"history must be positive, got {history_seconds} s")
    return max(1, math.ceil(history_seconds * rate_hz - 1e-9))


class TimeSeriesRing:
    """A ring of ``capacity`` timestamped samples with ``channels`` float64 values each."""

    __slots__ = ("_head", "_size", "_t", "_v", "capacity", "channels")

    def __init__(self, capacity: int = 900, channels: int = 1) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.capacity = capacity
        self.channels = channels
        self._t = np.zeros(2 * capacity, dtype=np.float64)
        self._v = np.full((2 * capacity, channels), np.nan, dtype=np.float64)
        self._head = 0  # index (0..capacity-1) the next sample is written to
        self._size = 0

    @classmethod
    def for_history(
        cls,
        history_seconds: float = DEFAULT_HISTORY_SECONDS,
        rate_hz: float = DEFAULT_RATE_HZ,
        channels: int = 1,
    ) -> TimeSeriesRing:
        return cls(capacity_for(history_seconds, rate_hz), channels)

    def __len__(self) -> int:
        return self._size

    @property
    def nbytes(self) -> int:
        return int(self._t.nbytes + self._v.nbytes)

    def append(self, t: float, *values: float) -> None:
        """Add one sample; the oldest is dropped when full. ``t`` must not go backwards."""
        if len(values) != self.channels:
            raise ValueError(f"expected {self.channels} values, got {len(values)}")
        h = self._head
        if self._size and t < self._t[h + self.capacity - 1]:
            raise ValueError(f"timestamp {t} is older than the last one {self._t[h + self.capacity - 1]}")
        self._t[h] = t
        self._t[h + self.capacity] = t
        self._v[h] = values
        self._v[h + self.capacity] = values
        self._head = h + 1 if h + 1 < self.capacity else 0
        if self._size < self.capacity:
            self._size += 1

    def _bounds(self, last_seconds: float | None, now: float | None) -> tuple[int, int]:
        end = self._head + self.capacity  # one past the newest, in mirrored coordinates
        start = end - self._size
        if last_seconds is not None and self._size:
            ref = self._t[end - 1] if now is None else now
            offset = int(np.searchsorted(self._t[start:end], ref - last_seconds, side="left"))
            start += offset
        return start, end

    def view(
        self, last_seconds: float | None = None, now: float | None = None
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """``(timestamps[n], values[n, channels])`` in time order, as views (no copy).

        ``last_seconds`` keeps the samples with ``t >= ref - last_seconds`` where ``ref`` is ``now``
        or, by default, the newest timestamp. ``None`` returns everything held.
        """
        start, end = self._bounds(last_seconds, now)
        return self._t[start:end], self._v[start:end]

    def channel(
        self, index: int, last_seconds: float | None = None, now: float | None = None
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """``(timestamps[n], values[n])`` of one channel, as views."""
        start, end = self._bounds(last_seconds, now)
        return self._t[start:end], self._v[start:end, index]

    def copy_view(
        self, last_seconds: float | None = None, now: float | None = None
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Like :meth:`view` but read-only copies, safe to keep and to share between threads."""
        t, v = self.view(last_seconds, now)
        tc, vc = t.copy(), v.copy()
        tc.flags.writeable = False
        vc.flags.writeable = False
        return tc, vc

    def latest(self) -> tuple[float, npt.NDArray[np.float64]] | None:
        if not self._size:
            return None
        i = self._head + self.capacity - 1
        return float(self._t[i]), self._v[i]
