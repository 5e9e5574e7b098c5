from __future__ import annotations

import dataclasses
import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from stackpanel.core.metrics.engine import (
    MetricsEngine,
    MetricsSnapshot,
    snapshot_to_json,
    weighted_percentiles,
)
from stackpanel.core.metrics.synthetic import access_line


def write(path: Path, lines: list[str]) -> None:
    with open(path, "a") as f:
        f.write("".join(line + "\n" for line in lines))




def test_latency_percentiles_slide_with_the_window(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    eng = MetricsEngine(latency_window_s=10.0)
    eng.register_node("a", "apache", log, routes=["app"])
    write(log, [access_line("apache", 5, 200, ms / 1000, "app") for ms in range(1, 101)])
    s = eng.tick(100.0)
    n = s.node("a")
    assert n is not None
    assert n.latency_samples == 100
    assert (n.latency_p50, n.latency_p95, n.latency_p99) == pytest.approx((0.050, 0.095, 0.099))
    s = eng.tick(105.0)  # no new lines, still in the window
    assert s.node("a").latency_p50 == pytest.approx(0.050)  # type: ignore[union-attr]
    s = eng.tick(111.0)  # older than 10 s: gone
    n = s.node("a")
    assert n is not None and n.latency_p50 is None and n.latency_samples == 0
    hist = s.node_history[0]
    assert hist.t.tolist() == [100.0, 105.0, 111.0]
    assert hist.latency_p95[:2].tolist() == pytest.approx([0.095, 0.095])
    assert np.isnan(hist.latency_p95[2])
    eng.close()


def test_weighted_percentiles() -> None:
    v = np.array([3.0, 1.0, 2.0])
    assert weighted_percentiles(v, np.ones(3), (50,)) == [2.0]
    assert weighted_percentiles(v, np.array([1.0, 1.0, 10.0]), (50, 99)) == [2.0, 3.0]


def test_snapshot_is_immutable_and_json_exportable(tmp_path: Path) -> None:
    log = tmp_path / "u.log"
    eng = MetricsEngine()
    eng.register_node("u", "uvicorn", log, routes=["-"])
    eng.set_workers("u", os.getpid(), [])
    eng.tick(1.0)
    write(log, [access_line("uvicorn", os.getpid(), 200, 0, "-")] * 10)
    snap = eng.tick(2.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.nodes[0].rps = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        snap.nodes[0].status_totals["2xx"] = 0  # type: ignore[index]
    wh = snap.worker_history[0]
    assert wh.t.tolist() == [1.0, 2.0] and wh.rps.tolist() == [0.0, 10.0]
    with pytest.raises(ValueError):
        wh.cpu_percent[0] = 1.0
    eng.tick(3.0)
    assert wh.t.tolist() == [1.0, 2.0]  # later ticks don't touch an old snapshot
    doc = snapshot_to_json(snap)
    json.dumps(doc, allow_nan=False)
    (w,) = doc["workers"]
    assert {"node", "pid", "cpu", "rss", "rps"} <= set(w)
    assert (w["node"], w["pid"], w["rps"]) == ("u", os.getpid(), 10.0)
    assert doc["nodes"][0]["p50"] is None  # uvicorn logs no duration
    eng.close()




def test_run_in_thread_publishes_to_subscribers(tmp_path: Path) -> None:
    log = tmp_path / "n.log"
    eng = MetricsEngine(rate_hz=10)
    eng.register_node("n", "nginx", log, routes=["static"])
    eng.set_workers("n", os.getpid(), [])
    got: list[MetricsSnapshot] = []
    threads: set[str] = set()
    enough = threading.Event()

    def on_snapshot(s: MetricsSnapshot) -> None:
        got.append(s)
        threads.add(threading.current_thread().name)
        if len(got) >= 5:
            enough.set()

    def broken(_s: MetricsSnapshot) -> None:
        raise RuntimeError("subscriber bug")

    eng.subscribe(broken)  # logged, does not stop the engine
    unsubscribe = eng.subscribe(on_snapshot)
    write(log, [access_line("nginx", os.getpid(), 200, 0.001, "static")] * 7)
    thread = eng.run_in_thread(10)
    assert thread.daemon
    with pytest.raises(RuntimeError):
        eng.run_in_thread(10)
    assert enough.wait(5)
    eng.stop()
    assert not thread.is_alive() and not eng.running
    unsubscribe()
    assert threads == {"stackpanel-metrics"}
    times = [s.time for s in got]
    assert times == sorted(times)
    assert 0.09 < (times[-1] - times[0]) / (len(times) - 1) < 0.5  # 10 Hz, late ticks skipped
    assert got[-1].node("n").requests_total == 7  # type: ignore[union-attr]
    assert eng.snapshot() is got[-1]
    n = len(got)
    eng.tick()
    assert len(got) == n  # unsubscribed
    eng.close()


def test_a_tick_publishes_its_values_and_copies_no_history_until_read(tmp_path: Path, monkeypatch) -> None:
    from stackpanel.core.metrics.ringbuffer import TimeSeriesRing

    copies = []
    real_copy = TimeSeriesRing.copy_view
    monkeypatch.setattr(TimeSeriesRing, "copy_view", lambda self, *a, **k: copies.append(self) or real_copy(self))
    log = tmp_path / "u.log"
    eng = MetricsEngine()
    eng.register_node("u", "uvicorn", log, routes=["-"])
    eng.set_workers("u", os.getpid(), [])
    for t in range(1, 6):
        write(log, [access_line("uvicorn", os.getpid(), 200, 0, "-")] * t)
        snap = eng.tick(float(t))
    assert copies == []  # five ticks, nobody looked at a history: nothing copied
    assert snap.node("u").rps == 5.0  # type: ignore[union-attr]
    old = eng.tick(6.0)
    eng.tick(7.0)
    assert old.node_history[0].t.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]  # cut at its own tick
    assert old.worker_history[0].t.tolist()[-1] == 6.0
    n = len(copies)
    assert old.node_history is old.node_history and len(copies) == n  # copied once per snapshot
    eng.close()
