"""Cost of the metrics engine: its own CPU, its effect on throughput, and its memory over time.

    .venv/bin/python benchmarks/bench_metrics_engine.py cpu   [--hz 1] [--rounds 5] [--seconds 10]
    .venv/bin/python benchmarks/bench_metrics_engine.py ab    [--hz 1] [--pairs 6] [--seconds 8]
    .venv/bin/python benchmarks/bench_metrics_engine.py soak  [--ticks 1800] [--lines-per-tick 2000]
    .venv/bin/python benchmarks/bench_metrics_engine.py live  [--hz 10] [--minutes 4]
    .venv/bin/python benchmarks/bench_metrics_engine.py tick  [--hz 10] [--ticks 300] [--read-every 0]

The stack (``cpu``, ``ab``, ``live``): a profile written to a temp dir with one nginx node, 16
``worker_processes``, serving a small static file, supervised by a real :class:`StackSession`
(so the engine sees the master + 16 workers and the real access log). Load comes from ``wrk``.

* ``cpu``: the engine ticks in its own thread (``run_in_thread``); its CPU is that thread's
  utime + stime from ``/proc/self/task/<tid>/stat`` (psutil ``threads()``) over a window, in % of
  one core. Rounds alternate *idle* (no load) and *loaded*: ``wrk`` paced to about 20 000 req/s
  (a Lua ``delay()`` per request on each connection; wrk has no rate option) and ``--full``
  (wrk as fast as it goes). The rate wrk reached is reported.
* ``ab``: throughput of the same stack with the engine running vs not running (the access log is
  written in both cases), wrk at full speed, ``--pairs`` pairs alternating the order
  (on/off, off/on, ...). Before each run the engine catches up with the log written meanwhile
  (one tick), so an "on" run does not pay for the previous "off" run's lines.
* ``soak``: 1 800 ticks (30 min at 1 Hz) on an injected clock, a synthetic access log growing
  by ``--lines-per-tick`` lines a tick (rotated every 600 ticks), 16 real worker processes
  (``sleep``) of which 2 are replaced every ``--churn-every`` (10) ticks: 360 pids in all, more
  than the engine keeps by pid once gone (``KEEP_GONE_PIDS`` = 128). tracemalloc and RSS at the start, at
  ring-full (900 ticks) and at the end.
* ``tick``: the engine's own cost per tick, without wrk's noise: 17 real processes (``sleep``), a
  synthetic log of 2 000 lines a tick, an injected clock, the rings filled to capacity first
  (900 points at 1 Hz, 9 000 at 10 Hz); then the CPU time (``thread_time``) of ``--ticks`` ticks.
  ``--read-every N`` also reads every N-th snapshot's histories (what a visible plot panel does);
  0 = nobody reads them (the CLI, the bench, a hidden panel). Uses only the engine's public API,
  so the same script measures another checkout (``PYTHONPATH=<other tree>``).
* ``live``: the real stack at ``--hz`` for ``--minutes``, wrk paced at ~20k req/s in bursts of
  20 s with 10 s pauses, and nginx's workers churned (``SIGHUP`` reload = a new set of 16
  workers) every 60 s; RSS and tracemalloc of the process every 30 s.
"""
from __future__ import annotations

import argparse
import gc
import os
import platform
import re
import signal
import statistics
import subprocess
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

from stackpanel.core.machine import cpu_model
from stackpanel.core.metrics import MetricsEngine, MetricsSnapshot, NodeMetrics
from stackpanel.core.metrics.synthetic import access_line
from stackpanel.core.profiles.loader import load_profile
from stackpanel.core.session import StackSession

WORKERS = 16
PROFILE = """\
version: 1
name: bench-nginx-16
nodes:
  web:
    kind: nginx
    port: {port}
    workers: {workers}
    worker_connections: 4096
    routes:
      - path: /
        static: ./site
"""
PACE_LUA = "function delay()\n    return {ms}\nend\n"


def machine() -> str:
    model = cpu_model()
    load = os.getloadavg()
    return (f"nproc={os.cpu_count()} cpu={model!r} python={platform.python_version()} "
            f"kernel={platform.release()} loadavg={load[0]:.2f},{load[1]:.2f},{load[2]:.2f}")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def nginx_stack(tmp: Path, workers: int = WORKERS) -> Iterator[tuple[StackSession, str]]:
    (tmp / "site").mkdir()
    (tmp / "site" / "index.html").write_text("<!doctype html><title>bench</title><p>hello</p>\n")
    os.chmod(tmp, 0o755)
    prof = tmp / "bench.yaml"
    prof.write_text(PROFILE.format(port=free_port(), workers=workers))
    profile = load_profile(prof)
    session = StackSession(profile, run_dir=tmp / "run", metrics_mode="manual")
    try:
        session.start()  # the engine's thread is started/stopped by the benchmark
        yield session, profile.entry_url + "index.html"
    finally:
        session.close()


def wrk(url: str, seconds: float, conns: int, threads: int = 2, script: Path | None = None) -> float:
    argv = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds:g}s"]
    if script is not None:
        argv += ["-s", str(script)]
    out = subprocess.run(argv + [url], capture_output=True, text=True, timeout=seconds + 30).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        raise RuntimeError(f"no rate in wrk output:\n{out}")
    errs = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errs:
        raise RuntimeError(f"wrk saw errors:\n{out}")
    return float(m.group(1))


class WrkInBackground:
    def __init__(self, url: str, seconds: float, conns: int, script: Path | None) -> None:
        self.rate: float | None = None
        self._t = threading.Thread(target=self._run, args=(url, seconds, conns, script), daemon=True)

    def _run(self, url: str, seconds: float, conns: int, script: Path | None) -> None:
        self.rate = wrk(url, seconds, conns, script=script)

    def __enter__(self) -> WrkInBackground:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._t.join()


def thread_cpu_seconds(native_id: int) -> float:
    for t in psutil.Process().threads():
        if t.id == native_id:
            return t.user_time + t.system_time
    raise RuntimeError(f"thread {native_id} not found")


def measure_thread(native_id: int, seconds: float) -> float:
    """% of one core the thread used over ``seconds`` of wall time."""
    c0, w0 = thread_cpu_seconds(native_id), time.monotonic()
    time.sleep(seconds)
    c1, w1 = thread_cpu_seconds(native_id), time.monotonic()
    return (c1 - c0) / (w1 - w0) * 100.0


def web_of(snap: MetricsSnapshot) -> NodeMetrics:
    node = snap.node("web")
    assert node is not None
    return node


def med(xs: list[float]) -> float:
    return statistics.median(xs)


# --------------------------------------------------------------------------------------------------


def cmd_cpu(args: argparse.Namespace) -> None:
    print(machine())
    with tempfile.TemporaryDirectory(prefix="sp-bench-") as d:
        tmp = Path(d)
        pace = tmp / "pace.lua"
        pace.write_text(PACE_LUA.format(ms=args.delay_ms))
        with nginx_stack(tmp) as (session, url):
            thread = session.start_metrics(args.hz)
            assert thread.native_id is not None
            tid = thread.native_id
            time.sleep(3)  # first ticks: psutil handles, rings
            snap = session.metrics_snapshot()
            print(f"engine at {args.hz:g} Hz watching {len(snap.workers)} processes of node 'web'; "
                  f"{args.seconds:g} s windows")
            rows: dict[str, list[float]] = {"idle": [], "paced": [], "full": []}
            rates: dict[str, list[float]] = {"paced": [], "full": []}
            for r in range(args.rounds):
                rows["idle"].append(measure_thread(tid, args.seconds))
                for kind, script, conns in (("paced", pace, args.paced_conns), ("full", None, args.full_conns)):
                    with WrkInBackground(url, args.seconds + 3, conns, script) as w:
                        time.sleep(1.5)
                        rows[kind].append(measure_thread(tid, args.seconds))
                    assert w.rate is not None
                    rates[kind].append(w.rate)
                    time.sleep(1.5)  # nginx flushes its log buffer every 1 s: let the engine catch up
                print(f"round {r + 1}: idle {rows['idle'][-1]:.2f} %  |  paced {rates['paced'][-1]:,.0f} req/s: "
                      f"{rows['paced'][-1]:.2f} %  |  full {rates['full'][-1]:,.0f} req/s: {rows['full'][-1]:.2f} %")
            snap = session.metrics_snapshot()
            session.stop_metrics()
            print(f"medians over {args.rounds} rounds (engine thread CPU, % of one core):")
            print(f"  idle                          {med(rows['idle']):6.2f} %")
            print(f"  paced, {med(rates['paced']):8,.0f} req/s        {med(rows['paced']):6.2f} %")
            print(f"  full,  {med(rates['full']):8,.0f} req/s        {med(rows['full']):6.2f} %")
            print(f"processes in the last snapshot: {len(snap.workers)}; requests counted: "
                  f"{web_of(snap).requests_total:,}")


def cmd_ab(args: argparse.Namespace) -> None:
    print(machine())
    with tempfile.TemporaryDirectory(prefix="sp-bench-") as d:  # noqa: SIM117
        with nginx_stack(Path(d)) as (session, url):
            wrk(url, 3, args.conns)  # warm up
            on: list[float] = []
            off: list[float] = []
            for i in range(args.pairs):
                order = ("on", "off") if i % 2 == 0 else ("off", "on")
                pair = {}
                for mode in order:
                    time.sleep(1.2)  # nginx's 1 s log flush
                    session.tick_metrics()  # catch up with what was logged meanwhile (not timed)
                    if mode == "on":
                        session.start_metrics(args.hz)
                        time.sleep(0.3)
                    pair[mode] = wrk(url, args.seconds, args.conns)
                    if mode == "on":
                        session.stop_metrics()
                on.append(pair["on"])
                off.append(pair["off"])
                print(f"pair {i + 1} ({order[0]} first): on {pair['on']:,.0f}  off {pair['off']:,.0f}  "
                      f"ratio {pair['on'] / pair['off']:.3f}")
            ratios = [a / b for a, b in zip(on, off, strict=True)]
            print(f"median on {med(on):,.0f} req/s, off {med(off):,.0f} req/s; ratio of medians "
                  f"{med(on) / med(off):.3f}; median of pair ratios {med(ratios):.3f} "
                  f"(min {min(ratios):.3f}, max {max(ratios):.3f})")
            time.sleep(1.2)
            snap = session.tick_metrics()
            print(f"requests counted by the engine: {web_of(snap).requests_total:,}")


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def traced_kb() -> float:
    gc.collect()
    return tracemalloc.get_traced_memory()[0] / 1024


def cmd_soak(args: argparse.Namespace) -> None:
    print(machine())
    sleepers: list[subprocess.Popen[bytes]] = []

    def spawn() -> int:
        p = subprocess.Popen(["sleep", "3600"])
        sleepers.append(p)
        return p.pid

    def reap(pid: int) -> None:
        for p in sleepers:
            if p.pid == pid:
                p.kill()
                p.wait()
                sleepers.remove(p)
                return

    clock = [0.0]
    with tempfile.TemporaryDirectory(prefix="sp-soak-") as d:
        log_path = Path(d) / "access.log"
        eng = MetricsEngine(clock=lambda: clock[0], rate_hz=args.hz)
        eng.register_node("web", "nginx", log_path, routes=["static", "app"])
        master = spawn()
        workers = [spawn() for _ in range(WORKERS)]
        eng.set_workers("web", master, workers)
        out = open(log_path, "ab", buffering=0)  # noqa: SIM115 (reopened on rotation)
        if args.trace:
            tracemalloc.start()
        points: list[tuple[int, float, float]] = []
        t0 = time.perf_counter()
        try:
            for tick in range(args.ticks + 1):
                if tick and tick % args.churn_every == 0:  # churn: two workers go, two come
                    for old in workers[:2]:
                        reap(old)
                    workers = workers[2:] + [spawn(), spawn()]
                    eng.set_workers("web", master, workers)
                if tick and tick % 600 == 0:  # rotation: rename + new file
                    out.close()
                    os.replace(log_path, log_path.with_suffix(".1"))
                    out = open(log_path, "ab", buffering=0)  # noqa: SIM115
                per = max(1, args.lines_per_tick // len(workers))
                out.write(b"".join(
                    (access_line("nginx", pid, 200 if (tick + j) % 50 else 502, 0.001 * (1 + j % 7),
                                 "static" if j % 3 else "app") + "\n").encode() * per
                    for j, pid in enumerate(workers)
                ))
                snap = eng.tick(clock[0])
                clock[0] += 1.0 / args.hz
                if tick in (0, 10, 100, 450, 900, 1350, args.ticks) or tick % 300 == 0:
                    points.append((tick, traced_kb() if args.trace else float("nan"), rss_mb()))
                    print(f"tick {tick:5d}: traced {points[-1][1]:9.1f} KiB  rss {points[-1][2]:7.1f} MiB  "
                          f"rings {len(eng._worker_rings)}  requests {web_of(snap).requests_total:,}  "
                          f"pids seen {len(web_of(snap).requests_by_pid)}")
        finally:
            out.close()
            eng.close()
            for p in list(sleepers):
                p.kill()
                p.wait()
        elapsed = time.perf_counter() - t0
        full = next(p for p in points if p[0] == 900)
        end = points[-1]
        print(f"{args.ticks} ticks in {elapsed:.1f} s ({elapsed / args.ticks * 1000:.2f} ms/tick incl. log writing"
              f"{' and tracemalloc' if args.trace else ''})")
        print(f"growth from ring-full (tick 900) to end (tick {end[0]}): traced {end[1] - full[1]:+.1f} KiB, "
              f"rss {end[2] - full[2]:+.1f} MiB")


def cmd_live(args: argparse.Namespace) -> None:
    print(machine())
    tracemalloc.start()
    with tempfile.TemporaryDirectory(prefix="sp-bench-") as d:
        tmp = Path(d)
        pace = tmp / "pace.lua"
        pace.write_text(PACE_LUA.format(ms=args.delay_ms))
        with nginx_stack(tmp) as (session, url):
            thread = session.start_metrics(args.hz)
            assert thread.native_id is not None
            tid = thread.native_id
            time.sleep(1.0)  # first tick
            master = session.snapshot().node("web").pid  # type: ignore[union-attr]
            t_start = time.monotonic()
            end = t_start + args.minutes * 60
            next_report = t_start
            next_churn = t_start + 60
            cpu0 = thread_cpu_seconds(tid)
            rates: list[float] = []
            while time.monotonic() < end:
                now = time.monotonic()
                if now >= next_report:
                    snap = session.metrics_snapshot()
                    cpu = (thread_cpu_seconds(tid) - cpu0) / max(1e-9, now - t_start) * 100
                    print(f"{now - t_start:6.0f} s: rss {rss_mb():7.1f} MiB  traced {traced_kb():8.1f} KiB  "
                          f"procs {len(snap.workers)}  worker series {len(snap.worker_history)}  "
                          f"requests {web_of(snap).requests_total:,}  engine cpu so far {cpu:.2f} %",
                          flush=True)
                    next_report += 30
                if now >= next_churn and master:
                    os.kill(master, signal.SIGHUP)  # nginx reload: a new set of workers
                    next_churn += 60
                burst = min(20.0, end - time.monotonic())
                if burst >= 2:
                    rates.append(wrk(url, burst, args.paced_conns, script=pace))
                time.sleep(min(10.0, max(0.0, end - time.monotonic())))
            snap = session.metrics_snapshot()
            cpu = (thread_cpu_seconds(tid) - cpu0) / (time.monotonic() - t_start) * 100
            print(f"end: rss {rss_mb():.1f} MiB  traced {traced_kb():.1f} KiB  engine cpu over the run {cpu:.2f} % "
                  f"at {args.hz:g} Hz; wrk bursts median {med(rates):,.0f} req/s")
            session.stop_metrics()


def cmd_tick(args: argparse.Namespace) -> None:
    print(machine())
    sleepers = [subprocess.Popen(["sleep", "3600"]) for _ in range(WORKERS + 1)]
    clock = [0.0]
    try:
        with tempfile.TemporaryDirectory(prefix="sp-tick-") as d:
            log_path = Path(d) / "access.log"
            eng = MetricsEngine(clock=lambda: clock[0], rate_hz=args.hz)
            eng.register_node("web", "nginx", log_path, routes=["static", "app"])
            pids = [p.pid for p in sleepers]
            eng.set_workers("web", pids[0], pids[1:])
            per = max(1, 2000 // WORKERS)
            chunk = b"".join((access_line("nginx", pid, 200, 0.001 * (1 + j % 7), "static") + "\n").encode() * per
                             for j, pid in enumerate(pids[1:]))
            with open(log_path, "ab", buffering=0) as out:
                capacity = int(900 * args.hz)
                for _ in range(capacity):  # fill every ring
                    out.write(chunk)
                    eng.tick(clock[0])
                    clock[0] += 1.0 / args.hz
                costs = []
                for i in range(args.ticks):
                    out.write(chunk)
                    t0 = time.thread_time()
                    snap = eng.tick(clock[0])
                    if args.read_every and i % args.read_every == 0:
                        _ = snap.worker_history, snap.node_history
                    costs.append(time.thread_time() - t0)
                    clock[0] += 1.0 / args.hz
            eng.close()
    finally:
        for p in sleepers:
            p.kill()
            p.wait()
    costs.sort()
    median = costs[len(costs) // 2]
    print(f"{args.hz:g} Hz, rings of {capacity} points, 17 processes, 2,000 lines a tick, "
          f"histories read every {args.read_every or 'never'}: median {median * 1e3:.3f} ms CPU per tick "
          f"(p90 {costs[int(len(costs) * 0.9)] * 1e3:.3f} ms) = {median * args.hz * 100:.2f} % of a core")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("cpu")
    p.add_argument("--hz", type=float, default=1.0)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--delay-ms", type=int, default=2, help="wrk Lua delay() per request (pacing)")
    p.add_argument("--paced-conns", type=int, default=48)
    p.add_argument("--full-conns", type=int, default=64)
    p = sub.add_parser("ab")
    p.add_argument("--hz", type=float, default=1.0)
    p.add_argument("--pairs", type=int, default=6)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--conns", type=int, default=64)
    p = sub.add_parser("soak")
    p.add_argument("--hz", type=float, default=1.0)
    p.add_argument("--ticks", type=int, default=1800)
    p.add_argument("--lines-per-tick", type=int, default=2000)
    p.add_argument("--churn-every", type=int, default=10, help="ticks between replacing 2 of the 16 workers")
    p.add_argument("--no-trace", dest="trace", action="store_false")
    p = sub.add_parser("live")
    p.add_argument("--hz", type=float, default=10.0)
    p.add_argument("--minutes", type=float, default=4.0)
    p.add_argument("--delay-ms", type=int, default=2)
    p.add_argument("--paced-conns", type=int, default=48)
    p = sub.add_parser("tick")
    p.add_argument("--hz", type=float, default=10.0)
    p.add_argument("--ticks", type=int, default=300)
    p.add_argument("--read-every", type=int, default=0, help="read the histories of every N-th snapshot (0: never)")
    args = ap.parse_args()
    {"cpu": cmd_cpu, "ab": cmd_ab, "soak": cmd_soak, "live": cmd_live, "tick": cmd_tick}[args.cmd](args)


if __name__ == "__main__":
    main()
