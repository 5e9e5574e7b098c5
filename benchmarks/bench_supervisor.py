"""Supervisor timings with the real servers (issue 3's targets).

    .venv/bin/python benchmarks/bench_supervisor.py [--reps 5]

For nginx-uvicorn and nginx-gunicorn-uvicorn, each repetition on fresh ports:
  up → all ready; kill -9 of the app master → CRASHED event (detection) → READY again;
  kill -9 of the nginx master → detection → READY; stop → every process gone and ports free.
Prints medians (and min/max) per profile.
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from stackpanel.core.machine import describe_machine
from stackpanel.core.profiles.library import builtin_dir
from stackpanel.core.profiles.loader import load_profile
from stackpanel.core.render import render_stack
from stackpanel.core.supervise.events import NodeState, NodeStateChanged
from stackpanel.core.supervise.supervisor import Supervisor
from tests.integration.conftest import free_offset


class Waiter:
    def __init__(self, sup: Supervisor) -> None:
        self.events: list[NodeStateChanged] = []
        self.cond = threading.Condition()
        sup.subscribe(self.on)

    def on(self, e: object) -> None:
        if isinstance(e, NodeStateChanged):
            with self.cond:
                self.events.append(e)
                self.cond.notify_all()

    def wait(self, node: str, state: NodeState, after: float, timeout: float = 30) -> NodeStateChanged:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for e in self.events:
                    if e.node == node and e.state == state and e.at >= after:
                        return e
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{node} never reached {state}")
                self.cond.wait(left)


def one_rep(name: str, root: Path) -> dict[str, float]:
    profile = load_profile(builtin_dir() / f"{name}.yaml", port_offset=free_offset())
    sup = Supervisor(render_stack(profile, root / f"{name}-{time.monotonic_ns()}"))
    w = Waiter(sup)
    out: dict[str, float] = {}
    try:
        t0 = time.monotonic()
        sup.start()
        out["up → ready"] = time.monotonic() - t0
        for node, label in (("app", "app master"), ("web", "nginx master")):
            pid = sup.snapshot().node(node).pid
            assert pid is not None
            killed_at = time.time()
            os.kill(pid, signal.SIGKILL)
            crash = w.wait(node, NodeState.CRASHED, killed_at)
            ready = w.wait(node, NodeState.READY, crash.at)
            out[f"{label} crash → detected"] = crash.at - killed_at
            out[f"{label} crash → ready"] = ready.at - killed_at
        pids = {p for n in sup.snapshot().nodes for p in (n.pid, *n.worker_pids) if p}
        t0 = time.monotonic()
        sup.stop()
        while any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids):
            time.sleep(0.005)
        out["stop → all gone"] = time.monotonic() - t0
        out["SIGKILL needed"] = float(any("SIGKILL" in e.reason for e in w.events if e.state == NodeState.STOPPED))
    finally:
        sup.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    print(f"# machine: {describe_machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("nginx-uvicorn", "nginx-gunicorn-uvicorn"):
            reps = [one_rep(name, Path(tmp)) for _ in range(args.reps)]
            print(f"\n## {name} ({args.reps} runs)\n")
            print(f"| {'measure':<30} | {'median':>9} | {'min':>9} | {'max':>9} |")
            print(f"|{'-' * 32}|{'-' * 11}|{'-' * 11}|{'-' * 11}|")
            for key in reps[0]:
                values = [r[key] for r in reps]
                if key == "SIGKILL needed":
                    print(f"| {key:<30} | {int(sum(values))} of {len(values):<4} | {'':>9} | {'':>9} |")
                    continue
                fmt = (lambda v: f"{v * 1000:7.1f} ms") if max(values) < 0.1 else (lambda v: f"{v:7.3f} s ")
                print(f"| {key:<30} | {fmt(statistics.median(values)):>9} | {fmt(min(values)):>9} | "
                      f"{fmt(max(values)):>9} |")


if __name__ == "__main__":
    main()
