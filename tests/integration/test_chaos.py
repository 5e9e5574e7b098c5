"""The short version of benchmarks/bench_chaos.py (issue #18's fault test that stays): a few kill -9 of
`stackpanel up` in each phase, a double start and a seeded fault schedule under load."""
from __future__ import annotations

import random
from pathlib import Path

import pytest

from benchmarks.bench_chaos import kill_trial, run_doubles, run_faults

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("phase", ["start", "run", "stop"])
def test_kill_9_of_stackpanel_leaves_no_orphan_and_no_port(tmp_path: Path, phase: str) -> None:
    result = kill_trial(phase, random.Random(7), tmp_path)
    assert "error" not in result, result
    assert result["orphans"] == [] and result["held"] == [], result


def test_of_two_simultaneous_starts_exactly_one_runs(tmp_path: Path) -> None:
    assert run_doubles(1, tmp_path, quiet=True) == [{"running": 1, "refused_with_message": 1}]


def test_a_seeded_fault_schedule_refuses_no_connection_and_leaves_nothing(tmp_path: Path) -> None:
    results = run_faults(3, seed=1, root=tmp_path, quiet=True)
    end = results.pop()
    assert end["held_ports"] == []
    for r in results:
        assert r["failed"].get("connect_refused", 0) == 0, r
        assert r["failed"].get("http_5xx", 0) <= 16, r  # at most the requests in flight in a killed process
        assert r["recovered_s"] < 30, r
