from __future__ import annotations

import numpy as np
import pytest

from stackpanel.core.metrics.ringbuffer import TimeSeriesRing, capacity_for


def test_capacity_from_history_and_rate() -> None:
    assert capacity_for() == 900  # 15 min at 1 Hz
    assert capacity_for(900, 10) == 9000
    assert capacity_for(60, 0.5) == 30
    assert capacity_for(1.05, 10) == 11
    with pytest.raises(ValueError):
        capacity_for(900, 20)
    with pytest.raises(ValueError):
        capacity_for(0, 1)
    assert len(TimeSeriesRing.for_history(60, 2).view()[0]) == 0
    assert TimeSeriesRing.for_history(60, 2).capacity == 120


def test_append_and_view_in_time_order_before_wrap() -> None:
    r = TimeSeriesRing(5)
    assert len(r) == 0 and r.latest() is None
    for i in range(3):
        r.append(float(i), i * 10.0)
    t, v = r.view()
    assert t.tolist() == [0.0, 1.0, 2.0]
    assert v[:, 0].tolist() == [0.0, 10.0, 20.0]


def test_wrap_around_keeps_newest_in_order() -> None:
    r = TimeSeriesRing(5, channels=2)
    for i in range(13):
        r.append(float(i), float(i), -float(i))
    assert len(r) == 5
    t, v = r.view()
    assert t.tolist() == [8.0, 9.0, 10.0, 11.0, 12.0]
    assert v[:, 0].tolist() == [8.0, 9.0, 10.0, 11.0, 12.0]
    assert v[:, 1].tolist() == [-8.0, -9.0, -10.0, -11.0, -12.0]
    latest = r.latest()
    assert latest is not None and latest[0] == 12.0
    # at every head position (mirrored storage), the window is contiguous: views, no copies
    for k in range(5):
        r.append(13.0 + k, 0.0, 0.0)
        t, v = r.view()
        assert np.all(np.diff(t) > 0) and len(t) == 5
        assert np.shares_memory(t, r._t) and np.shares_memory(v, r._v)


def test_view_last_seconds() -> None:
    r = TimeSeriesRing(10)
    for i in range(25):  # wraps more than twice
        r.append(i * 0.5, float(i))
    t, v = r.view(last_seconds=2.0)  # newest is 12.0: keep t >= 10.0
    assert t.tolist() == [10.0, 10.5, 11.0, 11.5, 12.0]
    assert v[:, 0].tolist() == [20.0, 21.0, 22.0, 23.0, 24.0]
    t, _ = r.view(last_seconds=1.0, now=13.0)  # relative to an explicit now
    assert t.tolist() == [12.0]
    t, _ = r.view(last_seconds=100.0)
    assert len(t) == 10  # never more than held
    t, c = r.channel(0, last_seconds=0.5)
    assert t.tolist() == [11.5, 12.0] and c.tolist() == [23.0, 24.0]


def test_memory_is_fixed_and_copies_are_read_only() -> None:
    r = TimeSeriesRing(100, channels=3)
    before = r.nbytes
    for i in range(1000):
        r.append(float(i), 1.0, 2.0, 3.0)
    assert r.nbytes == before
    t, v = r.copy_view(last_seconds=9)
    assert len(t) == 10 and not t.flags.writeable and not v.flags.writeable
    r.append(1000.0, 9.0, 9.0, 9.0)
    assert t[-1] == 999.0  # the copy did not move


def test_rejects_wrong_arity_and_time_going_backwards() -> None:
    r = TimeSeriesRing(4, channels=2)
    with pytest.raises(ValueError):
        r.append(0.0, 1.0)
    r.append(5.0, 1.0, 1.0)
    r.append(5.0, 1.0, 1.0)  # equal is fine
    with pytest.raises(ValueError):
        r.append(4.0, 1.0, 1.0)
