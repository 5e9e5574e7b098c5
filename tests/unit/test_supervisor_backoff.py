"""Restart backoff: one formula, the documented one (BENCHMARKS.md, "back off exponentially")."""
from __future__ import annotations

import pytest

from stackpanel.core.supervise import supervisor
from stackpanel.core.supervise.supervisor import MAX_BACKOFF, restart_delay


@pytest.mark.parametrize(("restarts", "delay"), [(0, 0.0), (1, 0.5), (2, 1.5), (3, 3.5), (4, 7.5), (5, 15.5)])
def test_first_restart_is_immediate_then_backoff_times_two_to_the_n_minus_one(restarts: int, delay: float) -> None:
    assert restart_delay(0.5, restarts) == delay


def test_backoff_is_capped() -> None:
    assert restart_delay(0.5, 7) == MAX_BACKOFF == 30.0
    assert restart_delay(300.0, 1) == MAX_BACKOFF
    assert restart_delay(0.0, 10) == 0.0


def test_every_restart_path_uses_the_one_formula() -> None:
    import inspect

    source = inspect.getsource(supervisor)
    assert source.count("2 **") == 1  # the formula lives in restart_delay only
    assert source.count("restart_delay(") == 2  # its definition and restart_plan, its one caller
    assert source.count("restart_plan(") == 3  # its definition, the crash path, the failed-restart path


def test_restarts_are_counted_in_a_window_and_the_backoff_resets() -> None:
    """Six isolated crashes, each after a healthy stretch longer than the window, once left a node
    failed for good; now each restarts at once. Crashes close together back off and give up."""
    from collections import deque

    from stackpanel.core.profiles.schema import Availability
    from stackpanel.core.supervise.supervisor import restart_plan

    policy = Availability(backoff_seconds=0.5, max_restarts=3, restart_window_seconds=60)
    isolated: deque[float] = deque()
    assert [restart_plan(isolated, t, policy) for t in (0, 100, 200, 300, 400, 500)] == [0.0] * 6
    burst: deque[float] = deque()
    assert [restart_plan(burst, t, policy) for t in (0, 1, 2, 3)] == [0.0, 0.5, 1.5, None]
    # once the window has passed, the same node restarts again from the first, immediate restart
    assert restart_plan(burst, 100, policy) == 0.0
