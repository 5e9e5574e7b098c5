"""GUI benchmarks: plot redraw rate, GUI-thread timer jitter under a real stack, panel memory.

    QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/bench_gui.py plots [--workers 32 --minutes 15]
    xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python benchmarks/bench_gui.py plots
    QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/bench_gui.py jitter [--profile P --seconds 20]
    QT_QPA_PLATFORM=offscreen .venv/bin/python benchmarks/bench_gui.py memory [--workers 16 --minutes 30]

* plots (``fps_*``: wall clock; ``fps_cpu_*``: frames per second of GUI-thread CPU time, which
  does not depend on what else runs on the machine): a real MetricsEngine ticked over
  ``--workers`` live processes (sleepers) with synthetic
  access-log lines for ``--minutes`` of history (fake clock, 1 Hz), then the PlotsPanel redraws
  (setData on every curve + a synchronous repaint of the four plots) as fast as it can, alternating
  between two snapshots so nothing is cached. Reports frames/s per time window.
* jitter: the real MainWindow runs a real stack (``--profile``) through start, load (the core's
  generator at full speed), restart and stop, while a 10 ms QTimer on the GUI thread records how
  late it fires. Reports max / p99 lateness per phase (the GUI thread must never block > 50 ms)
  and, to tell blocking from starvation: the GUI thread's CPU share; for ticks > 20 ms late the
  split of those intervals into on-CPU / run-queue wait (schedstat) / asleep (GIL or idle); CPU per
  thread; how busy the machine was; garbage collections by generation and thread. ``--cprofile``
  and ``--catch-slow`` print cProfiles of the GUI thread (per phase / per late tick) to stderr.
* controls: GUI-thread CPU per state change for every control of the real window (``stateChanged``).
* memory: the panel (plots + graph) fed ``--minutes`` of 1 Hz snapshots of ``--workers`` processes
  (compressed in time, same amount of data and redraws), then RSS of this process.
"""
from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import platform
import pstats
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import psutil
from PySide6.QtCore import QElapsedTimer, QSettings, QTimer
from PySide6.QtWidgets import QApplication

from stackpanel.core.metrics import MetricsEngine, MetricsSnapshot
from stackpanel.core.metrics.synthetic import access_line


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    qpa = os.environ.get("QT_QPA_PLATFORM", "xcb")
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, Qt platform {qpa}"


def history(workers: int, seconds: int, tmp: Path) -> tuple[list[subprocess.Popen[bytes]], list[MetricsSnapshot]]:
    """Two snapshots (last tick and the one before) of a real engine with ``seconds`` of history."""
    procs = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"]) for _ in range(workers)]
    log = tmp / "app.access.log"
    eng = MetricsEngine(history_seconds=max(900, seconds))
    eng.register_node("app", "gunicorn", log, routes=["-"])
    eng.register_node("web", "nginx", tmp / "web.access.log", routes=["app"])
    eng.set_workers("app", os.getpid(), [p.pid for p in procs])
    snaps = []
    with open(log, "a") as f:
        for t in range(seconds):
            f.write("".join(access_line("gunicorn", procs[(t + i) % workers].pid, 200, 0.001 * (1 + i % 7), "-") + "\n"
                            for i in range(50)))
            f.flush()
            snap = eng.tick(float(t))
            if t >= seconds - 2:
                snaps.append(snap)
    eng.close()
    return procs, snaps


def bench_plots(args: argparse.Namespace) -> dict[str, object]:
    from stackpanel.qt.plots import PlotsPanel

    if args.no_grid:
        import stackpanel.qt.plots as plots_mod

        plots_mod.GRID_ALPHA = 0.0

    app = QApplication.instance() or QApplication(sys.argv[:1])
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        procs, snaps = history(args.workers, args.minutes * 60, Path(d))
        build_s = time.perf_counter() - t0
        try:
            panel = PlotsPanel(redraw_ms=1_000_000)
            panel.resize(1400, 700)
            panel.show()
            app.processEvents()
            results: dict[str, object] = {"workers": args.workers, "history_s": args.minutes * 60,
                                          "build_s": round(build_s, 2), "curves": 0}
            for window in (60, 300, 900):
                panel.set_window(window)
                frames, t_end, i = 0, time.perf_counter() + args.seconds, 0
                times, cpu_times = [], []
                while time.perf_counter() < t_end:
                    f0, c0 = time.perf_counter(), time.thread_time()
                    panel.apply_metrics(snaps[i % 2])
                    panel.redraw()
                    app.processEvents()  # the queued update requests paint the four plots
                    times.append(time.perf_counter() - f0)
                    cpu_times.append(time.thread_time() - c0)
                    frames += 1
                    i += 1
                results["curves"] = panel.curve_count()
                results[f"fps_{window // 60}min"] = round(frames / sum(times), 1)
                # GUI-thread CPU per frame: what the machine could do without other load on it
                results[f"fps_cpu_{window // 60}min"] = round(frames / sum(cpu_times), 1)
                results[f"frame_ms_p95_{window // 60}min"] = round(sorted(times)[int(0.95 * len(times))] * 1000, 1)
            return results
        finally:
            for p in procs:
                p.kill()
                p.wait()


def bench_memory(args: argparse.Namespace) -> dict[str, object]:
    from stackpanel.core.profiles.library import resolve_profile
    from stackpanel.core.profiles.loader import load_profile
    from stackpanel.qt.graph_view import GraphView
    from stackpanel.qt.plots import PlotsPanel

    app = QApplication.instance() or QApplication(sys.argv[:1])
    rss0 = psutil.Process().memory_info().rss
    procs = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"]) for _ in range(args.workers)]
    try:
        with tempfile.TemporaryDirectory() as d:
            log = Path(d) / "app.access.log"
            eng = MetricsEngine()
            eng.register_node("app", "gunicorn", log, routes=["-"])
            eng.register_node("web", "nginx", Path(d) / "web.access.log", routes=["app"])
            eng.set_workers("app", procs[0].pid, [p.pid for p in procs[1:]])
            panel = PlotsPanel(redraw_ms=1_000_000)
            graph = GraphView()
            graph.set_profile(load_profile(resolve_profile("nginx-gunicorn-uvicorn")))
            panel.resize(1400, 700)
            panel.show()
            graph.show()
            t0 = time.perf_counter()
            with open(log, "a") as f:
                for t in range(args.minutes * 60):
                    f.write("".join(access_line("gunicorn", procs[1 + (t + i) % (args.workers - 1)].pid, 200,
                                                0.002, "-") + "\n" for i in range(100)))
                    f.flush()
                    snap = eng.tick(float(t))
                    panel.apply_metrics(snap)
                    graph.apply_metrics(snap)
                    panel.redraw()
                    if t % 10 == 0:
                        for p in panel.plots:
                            p.widget.viewport().repaint()
                        graph.viewport().repaint()
                    app.processEvents()
            eng.close()
            rss = psutil.Process().memory_info().rss
            return {"workers": args.workers, "minutes_of_snapshots": args.minutes,
                    "wall_s": round(time.perf_counter() - t0, 1),
                    "rss_start_mb": round(rss0 / 2**20, 1), "rss_end_mb": round(rss / 2**20, 1)}
    finally:
        for p in procs:
            p.kill()
            p.wait()


LATE_MS = 20


def set_threads_nice(nice: int) -> None:
    """Every thread of this process (Linux: nice is per thread); processes started later inherit it."""
    for tid in os.listdir("/proc/self/task"):
        try:
            os.setpriority(os.PRIO_PROCESS, int(tid), nice)
        except OSError:
            pass


def bench_jitter(args: argparse.Namespace) -> dict[str, object]:
    from stackpanel.core.loadgen import LoadConfig
    from stackpanel.core.supervise.events import StackState
    from stackpanel.core.supervise.ports import free_port_offset
    from stackpanel.qt.app import freeze_startup_heap
    from stackpanel.qt.load_panel import LoadPanel
    from stackpanel.qt.log_view import LogView
    from stackpanel.qt.main_window import MainWindow
    from stackpanel.qt.plots import PlotsPanel

    app = QApplication.instance() or QApplication(sys.argv[:1])
    tmp = tempfile.mkdtemp()
    os.environ["XDG_STATE_HOME"] = tmp  # run dirs in a throwaway place
    settings = QSettings(str(Path(tmp) / "s.ini"), QSettings.Format.IniFormat)
    w = MainWindow(initial_profile=args.profile, settings=settings)
    if not args.no_gc_freeze:
        freeze_startup_heap()  # as run_gui does
    w.resize(1500, 920)
    w.show()
    lateness: dict[str, list[float]] = {}
    #: per tick: (interval ms, GUI-thread CPU ms, GUI-thread run-queue wait ms in that interval), to
    #: tell blocking (on CPU) from CPU starvation (runnable, waiting for a core) from the rest
    #: (asleep: waiting for the GIL, or idle between events)
    intervals: dict[str, list[tuple[float, float, float, float]]] = {}
    schedstat = os.open("/proc/thread-self/schedstat", os.O_RDONLY)  # this (the GUI) thread's

    def runq_wait_ns() -> int:
        return int(os.pread(schedstat, 128, 0).split()[1])

    last_wait = [runq_wait_ns()]
    phase = ["load-profile"]
    clock = QElapsedTimer()
    clock.start()
    last = [clock.nsecsElapsed()]
    phase_t0 = [last[0]]
    last_cpu = [time.thread_time()]
    period_ms = 10
    me = psutil.Process()
    phase_start: dict[str, tuple[float, dict[int, float]]] = {}
    threads_cpu: dict[str, dict[str, object]] = {}
    profiler: list[cProfile.Profile] = []
    catcher: list[cProfile.Profile] = []

    #: garbage collections (any thread) per phase: (generation, ms, thread); a collection holds
    #: the GIL, so one on another thread stalls the GUI thread just the same
    collections: dict[str, list[tuple[int, float, str]]] = {}
    gc_started: dict[int, float] = {}

    def on_gc(stage: str, info: dict[str, int]) -> None:
        tid = threading.get_ident()
        if stage == "start":
            gc_started[tid] = time.perf_counter()
        elif tid in gc_started:
            ms = (time.perf_counter() - gc_started.pop(tid)) * 1000
            collections.setdefault(phase[0], []).append((info["generation"], ms, threading.current_thread().name))

    gc.callbacks.append(on_gc)

    def thread_times() -> dict[int, float]:
        return {t.id: t.user_time + t.system_time for t in me.threads()}

    def thread_name(tid: int) -> str:
        for t in threading.enumerate():
            if t.native_id == tid:
                return t.name
        try:
            return Path(f"/proc/self/task/{tid}/comm").read_text().strip()
        except OSError:
            return str(tid)

    def on_tick() -> None:
        now, cpu, waited = clock.nsecsElapsed(), time.thread_time(), runq_wait_ns()
        interval = (now - last[0]) / 1e6
        lateness.setdefault(phase[0], []).append(interval - period_ms)
        intervals.setdefault(phase[0], []).append(
            (interval, (cpu - last_cpu[0]) * 1000, (waited - last_wait[0]) / 1e6, (now - phase_t0[0]) / 1e9))
        last[0], last_cpu[0], last_wait[0] = now, cpu, waited
        if args.catch_slow:  # a profile of every tick interval; printed when the tick was late
            if catcher:
                prof = catcher.pop()
                prof.disable()
                if interval - period_ms > args.catch_slow:
                    buf = io.StringIO()
                    pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(18)
                    print(f"--- {phase[0]!r} +{(now - phase_t0[0]) / 1e9:.1f} s: tick {interval - period_ms:.0f} ms "
                          f"late ---\n{buf.getvalue()}", file=sys.stderr)
            prof = cProfile.Profile()
            catcher.append(prof)
            prof.enable()

    probe = QTimer()
    probe.setTimerType(probe.timerType().PreciseTimer)
    probe.timeout.connect(on_tick)
    probe.start(period_ms)

    def wait(cond: object, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            app.processEvents()
            if cond():  # type: ignore[operator]
                return True
            time.sleep(0.001)
        return False

    def end_phase() -> None:
        name = phase[0]
        if name in phase_start:
            t0, before = phase_start.pop(name)
            wall = time.perf_counter() - t0
            after = thread_times()
            use = {tid: after[tid] - before.get(tid, 0.0) for tid in after}
            top = sorted(use.items(), key=lambda kv: -kv[1])[:6]
            box = psutil.cpu_times_percent(interval=None)
            threads_cpu[name] = {
                "wall_s": round(wall, 1),
                "box_busy_pct": round(100 - box.idle - box.iowait, 1),  # whole machine, since phase start
                "threads_cpu_pct": {f"{thread_name(tid)}": round(100 * v / wall, 1) for tid, v in top if v > 0.005},
            }
        if profiler:
            prof = profiler.pop()
            prof.disable()
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(25)
            print(f"--- cProfile of the GUI thread, phase {name!r} (by own time) ---", file=sys.stderr)
            print(buf.getvalue(), file=sys.stderr)
            buf = io.StringIO()
            pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(25)
            print(buf.getvalue(), file=sys.stderr)

    def set_phase(name: str) -> None:
        end_phase()
        phase[0] = name
        last[0], last_cpu[0], last_wait[0] = clock.nsecsElapsed(), time.thread_time(), runq_wait_ns()
        phase_t0[0] = last[0]
        psutil.cpu_times_percent(interval=None)
        phase_start[name] = (time.perf_counter(), thread_times())
        if args.cprofile and not args.catch_slow and any(name.startswith(c) for c in args.cprofile.split(",")):
            prof = cProfile.Profile()
            profiler.append(prof)
            prof.enable()  # this (the GUI) thread only

    c = w.controller
    wait(lambda: c.loaded is not None, 20)
    assert c.loaded is not None and c.loaded.profile is not None
    offset = free_port_offset([n.port for n in c.loaded.profile.nodes.values()])
    w.offset_spin.setValue(offset)
    wait(lambda: c.loaded is not None and c.loaded.port_offset == offset, 20)
    assert c.loaded is not None and c.loaded.profile is not None
    w.tabs.setCurrentWidget(w.panel(PlotsPanel))
    set_phase("start")
    w.act_start.trigger()
    assert wait(lambda: c.stack_state == StackState.RUNNING, 90), "stack did not start"
    set_phase("idle (running)")
    wait(lambda: False, 3)
    if args.gui_nice:  # experiment: this process's threads (not the stack's) get another priority
        set_threads_nice(args.gui_nice)
    set_phase("under load")
    lp = w.panel(LoadPanel)
    url = c.loaded.profile.entry_url.rstrip("/") + args.path
    lp.bridge.start(LoadConfig(url=url, connections=32, duration_s=args.seconds, processes=args.load_processes))
    wait(lp.bridge.run.done, args.seconds + 30)
    result = lp.bridge.run.result()
    set_phase("logs tab under load")
    w.tabs.setCurrentWidget(w.panel(LogView))
    lp.bridge.start(LoadConfig(url=url, connections=32, duration_s=5, processes=args.load_processes))
    wait(lp.bridge.run.done, 35)
    w.tabs.setCurrentWidget(w.panel(PlotsPanel))
    if args.gui_nice:
        set_threads_nice(0)
    set_phase("restart")
    w.act_restart.trigger()
    wait(lambda: c.busy, 5)
    assert wait(lambda: not c.busy and c.stack_state == StackState.RUNNING, 90)
    set_phase("stop")
    w.act_stop.trigger()
    assert wait(lambda: not c.busy and c.stack_state == StackState.STOPPED, 90)
    set_phase("closing")
    end_phase()
    w._close_confirmed = True
    w.close()
    wait(lambda: not w.isVisible(), 60)
    probe.stop()
    for prof in catcher:
        prof.disable()
    os.close(schedstat)
    gc.callbacks.remove(on_gc)
    out: dict[str, object] = {"profile": args.profile, "load_processes": args.load_processes,
                              "load_rps": round(result.rps), "load_requests": result.requests_ok,
                              "load_path": args.path}
    for name, values in lateness.items():
        if name == "load-profile" or not values:
            continue
        values.sort()
        ivs = intervals[name]
        late = [iv for iv in ivs if iv[0] - period_ms > LATE_MS]
        late_wall = sum(iv[0] for iv in late)
        out[name] = {"ticks": len(values), "max_late_ms": round(values[-1], 1),
                     "p99_late_ms": round(values[int(0.99 * (len(values) - 1))], 1),
                     "median_late_ms": round(statistics.median(values), 2),
                     # share of wall time the GUI thread was on a CPU (whole phase)
                     "gui_cpu_pct": round(100 * sum(iv[1] for iv in ivs) / max(1e-9, sum(iv[0] for iv in ivs)), 1),
                     # ticks more than LATE_MS late: how many, and how those intervals were spent by the
                     # GUI thread: on a CPU (blocking work), runnable but waiting for a core (CPU
                     # starvation), the rest asleep (waiting for the GIL, or nothing to do)
                     f"late_gt_{LATE_MS}ms": len(late),
                     # the worst: (ms late, seconds into the phase)
                     "late_ms_at_s": sorted(((round(iv[0] - period_ms), round(iv[3], 1)) for iv in late),
                                            reverse=True)[:8],
                     "late_split_pct": {
                         "on_cpu": round(100 * sum(iv[1] for iv in late) / late_wall, 1),
                         "runqueue": round(100 * sum(iv[2] for iv in late) / late_wall, 1),
                         "asleep": round(100 * (late_wall - sum(iv[1] + iv[2] for iv in late)) / late_wall, 1),
                     } if late else None,
                     "gc_ms_by_generation": {
                         g: [round(sum(c[1] for c in collections.get(name, []) if c[0] == g), 1),
                             max((round(c[1], 1) for c in collections.get(name, []) if c[0] == g), default=0.0),
                             sum(1 for c in collections.get(name, []) if c[0] == g)]
                         for g in (0, 1, 2)},  # [total ms, longest ms, count]
                     "gc_slow": sorted({(round(c[1]), c[0], c[2]) for c in collections.get(name, []) if c[1] > 10},
                                       reverse=True)[:5],
                     **threads_cpu.get(name, {})}
    return out


def bench_controls(args: argparse.Namespace) -> dict[str, object]:
    """GUI-thread CPU to bring every control of the real window up to date after one state change
    (the controller's ``stateChanged`` fan-out to the controls that connect themselves)."""
    from stackpanel.qt.main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    tmp = tempfile.mkdtemp()
    os.environ["XDG_STATE_HOME"] = tmp
    settings = QSettings(str(Path(tmp) / "s.ini"), QSettings.Format.IniFormat)
    w = MainWindow(initial_profile=args.profile, settings=settings)
    w.show()
    deadline = time.monotonic() + 20
    while w.controller.loaded is None and time.monotonic() < deadline:
        app.processEvents()
    per_call = []
    for _ in range(5):
        t0 = time.thread_time()
        for _ in range(args.calls):
            w.controller.stateChanged.emit()
        per_call.append((time.thread_time() - t0) / args.calls * 1e6)
    w.close()
    return {"profile": args.profile, "calls": args.calls, "us_per_state_change_best": round(min(per_call), 1),
            "us_per_state_change_median": round(statistics.median(per_call), 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("plots")
    p.add_argument("--workers", type=int, default=32)
    p.add_argument("--minutes", type=int, default=15)
    p.add_argument("--seconds", type=float, default=5.0, help="measuring time per window")
    p.add_argument("--no-grid", action="store_true", help="(experiment) plots without grid lines")
    j = sub.add_parser("jitter")
    j.add_argument("--profile", default="nginx-gunicorn-uvicorn")
    j.add_argument("--path", default="/api/hello")
    j.add_argument("--seconds", type=float, default=20.0)
    j.add_argument("--load-processes", type=int, default=1,
                   help="1 = generator thread inside the GUI process (shares its GIL)")
    j.add_argument("--cprofile", metavar="PHASE", default="",
                   help="cProfile the GUI thread during the phases starting with PHASE (comma-separated list); "
                        "stats to stderr")
    j.add_argument("--gui-nice", type=int, default=0,
                   help="(experiment) nice value of this process's threads during the load phases; "
                        "negative needs root. Tells CPU starvation from blocking")
    j.add_argument("--catch-slow", type=float, default=0.0, metavar="MS",
                   help="profile the GUI thread tick by tick; print the profile of every tick more than MS "
                        "late (stderr)")
    j.add_argument("--no-gc-freeze", action="store_true",
                   help="(experiment) skip the start-up gc.freeze() that run_gui does")
    m = sub.add_parser("memory")
    m.add_argument("--workers", type=int, default=16)
    m.add_argument("--minutes", type=int, default=30)
    c = sub.add_parser("controls")
    c.add_argument("--profile", default="nginx-gunicorn-uvicorn")
    c.add_argument("--calls", type=int, default=2000)
    args = ap.parse_args()
    fn = {"plots": bench_plots, "jitter": bench_jitter, "memory": bench_memory, "controls": bench_controls}[args.cmd]
    result = fn(args)
    print(json.dumps({"bench": args.cmd, "machine": machine(), **result}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
