"""Memory of the metrics engine stays flat: 30 minutes at 1 Hz (1 800 ticks) on an injected clock,
a growing access log (rotated), workers that come and go. After the ring buffers are full
(900 ticks) the engine's memory must not grow beyond a small bound."""
from __future__ import annotations

import gc
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from stackpanel.core.metrics import engine as engine_module
from stackpanel.core.metrics.engine import MetricsEngine
from stackpanel.core.metrics.ingest import FOLDED_PID, IngestBatch
from stackpanel.core.metrics.sampler import ProcessSample, ProcessSampler
from stackpanel.core.metrics.synthetic import access_line

WORKERS = 16
TICKS = 1800
RING_FULL = 900
LINES_PER_WORKER = 8  # per tick: 128 lines/tick
CHURN_EVERY = 10  # ticks; 2 workers replaced each time: 360 pids in 30 min
ROTATE_EVERY = 600
KEEP_GONE = 16  # engine.KEEP_GONE_PIDS for this test (128 by default)
#: ticks after ring-full for the reference point: every worker, its ring and every kept gone
#: pid have been replaced since tracing started (> max(WORKERS, KEEP_GONE) / 2 * CHURN_EVERY)
REFERENCE_AFTER = 100
#: measured 18-26 KiB (numpy small objects, dict resizes: flat over 4 400 ticks); without folding
#: gone pids the same run grew by 137 KiB
GROWTH_BOUND = 64 * 1024


class FakeSampler(ProcessSampler):
    """Samples without processes: each member gets deterministic CPU/RSS (timing logic only)."""

    def sample(self) -> tuple[ProcessSample, ...]:
        now = self._clock()
        with self._lock:
            nodes = dict(self._nodes)
        return tuple(
            ProcessSample(node, pid, role, float(pid % 7), 10_000_000 + pid, 0.0, now)
            for node, members in nodes.items()
            for pid, role in members.roles()
        )


def _traced() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def test_memory_is_flat_after_the_rings_are_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A small table of gone workers, so it turns over (old entries folded) within REFERENCE_AFTER.
    monkeypatch.setattr(engine_module, "KEEP_GONE_PIDS", KEEP_GONE)
    clock = [0.0]
    log_path = tmp_path / "access.log"
    eng = MetricsEngine(clock=lambda: clock[0], sampler=FakeSampler(clock=lambda: clock[0]))
    eng.register_node("web", "nginx", log_path, routes=["static", "app"])
    next_pid = iter(range(10_000, 1_000_000))
    master = next(next_pid)
    workers = [next(next_pid) for _ in range(WORKERS)]
    eng.set_workers("web", master, workers)
    out = open(log_path, "ab", buffering=0)  # noqa: SIM115 (reopened on rotation)
    written = 0
    n_pids = 1 + WORKERS  # (a count: a set of every pid would itself grow)
    try:
        at_full = -1
        for tick in range(TICKS + 1):
            if tick and tick % CHURN_EVERY == 0:
                workers = workers[2:] + [next(next_pid), next(next_pid)]
                n_pids += 2
                eng.set_workers("web", master, workers)
            if tick and tick % ROTATE_EVERY == 0:
                out.close()
                os.replace(log_path, log_path.with_suffix(".1"))
                out = open(log_path, "ab", buffering=0)  # noqa: SIM115
            out.write(b"".join(
                (access_line("nginx", pid, 502 if (tick + j) % 50 == 0 else 200, 0.001 * (1 + j % 7),
                             "app" if j % 3 == 0 else "static") + "\n").encode() * LINES_PER_WORKER
                for j, pid in enumerate(workers)
            ))
            written += LINES_PER_WORKER * len(workers)
            snap = eng.tick(clock[0])
            clock[0] += 1.0
            if tick == RING_FULL:
                # Tracing all 1 800 ticks would take too long: trace from ring-full on, and take the
                # reference once every worker (and its ring) has been replaced since then, so the
                # engine's live objects are traced ones at both points. Conservative: frees of
                # blocks allocated before tracing are not subtracted.
                tracemalloc.start()
            if tick == RING_FULL + REFERENCE_AFTER:
                at_full = _traced()
        at_end = _traced()
    finally:
        tracemalloc.stop()
        out.close()
        eng.close()

    growth = at_end - at_full
    assert growth < GROWTH_BOUND, f"engine memory grew by {growth / 1024:.1f} KiB after the rings were full"
    # the engine kept up and stayed bounded: every line counted, one ring per live process,
    # histories at capacity
    web = snap.node("web")
    assert web is not None and web.requests_total == written and web.unparseable_total == 0
    assert sum(web.requests_by_pid.values()) == written
    assert len(snap.workers) == WORKERS + 1
    assert len(eng._worker_rings) == WORKERS + 1
    assert all(len(h.t) == RING_FULL for h in snap.node_history)
    assert n_pids > WORKERS + KEEP_GONE + 100  # there really was churn ...
    assert len(web.requests_by_pid) <= WORKERS + 1 + KEEP_GONE + 1  # ... and the table stayed bounded
    assert web.requests_by_pid.get(FOLDED_PID, 0) > 0


def test_fold_pids_keeps_sums_exact_and_the_newest_pids() -> None:
    b = IngestBatch()
    for pid in range(100, 110):
        b.by_pid[pid] = pid
        b.by_pid_status[(pid, "2xx")] = pid - 1
        b.by_pid_status[(pid, "5xx")] = 1
    total, total_status = sum(b.by_pid.values()), sum(b.by_pid_status.values())
    assert b.fold_pids({100, 101}, keep_others=3) == 5  # 102..106 folded; 107..109 kept
    assert set(b.by_pid) == {100, 101, 107, 108, 109, FOLDED_PID}
    assert b.by_pid[FOLDED_PID] == sum(range(102, 107))
    assert sum(b.by_pid.values()) == total and sum(b.by_pid_status.values()) == total_status
    assert b.by_pid_status[(FOLDED_PID, "5xx")] == 5
    assert b.fold_pids({100, 101}, keep_others=3) == 0  # idempotent
    b.by_pid[110] = 1
    assert b.fold_pids({100, 101}, keep_others=3) == 1 and b.by_pid[FOLDED_PID] == sum(range(102, 108))


def test_latency_fast_path_matches_the_per_line_parser() -> None:
    from stackpanel.core.metrics.ingest import _sample_latencies

    def lines(tier: str, secs: list[float]) -> list[bytes]:
        return [access_line(tier, 7, 200, s, "-").encode() for s in secs]  # type: ignore[arg-type]

    secs = [0.001 * i for i in range(200)]
    for tier in ("nginx", "apache", "gunicorn", "uvicorn"):
        ls = lines(tier, secs)
        fast, wf = _sample_latencies(ls, 1000, all_valid=True)
        slow, ws = _sample_latencies(ls, 1000, all_valid=False)
        assert wf == ws == 1.0
        assert np.allclose(np.sort(fast), np.sort(slow)), tier
    mixed = lines("nginx", [0.5]) + lines("uvicorn", [0.1]) + [b"9 200 -1 - -", b"9 200 nan - -"]
    fast, _ = _sample_latencies(mixed, 1000, all_valid=True)
    assert fast.tolist() == [0.5]


