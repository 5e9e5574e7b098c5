"""Cost of live tracing (#15): throughput with metrics + traces on vs off, and memory at full load.

    .venv/bin/python benchmarks/bench_traces.py ab   [--profile nginx-uvicorn] [--pairs 6] [--seconds 8] [--hz 1]
    .venv/bin/python benchmarks/bench_traces.py ingest [--lines 5000] [--chunks 40]
    .venv/bin/python benchmarks/bench_traces.py soak [--profile nginx-uvicorn] [--minutes 30] [--every 30]

The stack is a built-in proxied profile (default nginx → uvicorn, 2 workers), ports shifted out of
the way, supervised by a real :class:`StackSession` with traces on (its default).

* ``ab``: wrk at full speed on ``/api/hello``; "on" = the engine's thread ticking at ``--hz``
  (counts, latency and the trace collector on the same lines), "off" = no engine thread (the
  servers write the same access logs). ``--pairs`` pairs alternating the order (on/off, off/on,
  ...); before each run the engine catches up with what was logged meanwhile (one tick, not timed),
  so an "on" run does not pay for the previous "off" run's lines. Medians and pair ratios.
* ``ingest``: the hot path alone, no servers: the engine's ingest of ``--lines`` synthetic requests
  a chunk through three tiers (nginx, Apache, gunicorn lines with ids and finish times, 1 % failed),
  with the trace collector attached vs not, CPU time (``thread_time``) per chunk, alternating.
* ``soak``: wrk at full speed for ``--minutes`` (one connection in 100 asks ``/api/status?code=500``
  and one ``/api/wait?ms=20``, so the failed and slowest sets fill up), the engine at 1 Hz; every
  ``--every`` seconds this process's RSS, the Python heap (tracemalloc) and what the collector holds.
"""
from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_metrics_engine import machine, med, thread_cpu_seconds, wrk

from stackpanel.core.profiles.library import builtin_dir
from stackpanel.core.profiles.loader import load_profile
from stackpanel.core.session import StackSession
from stackpanel.core.supervise.ports import free_port_offset

MIX_LUA = """\
counter = 0
request = function()
    counter = counter + 1
    if counter % 100 == 0 then return wrk.format("GET", "/api/status?code=500") end
    if counter % 100 == 50 then return wrk.format("GET", "/api/wait?ms=20") end
    return wrk.format("GET", "/api/hello")
end
"""


def session_for(name: str, run_dir: Path, mode: str) -> StackSession:
    profile = load_profile(builtin_dir() / f"{name}.yaml", port_offset=free_port_offset((8000, 8080, 8081)))
    return StackSession(profile, run_dir=run_dir, metrics_mode=mode)  # type: ignore[arg-type]


def cmd_ab(args: argparse.Namespace) -> None:
    print(machine())
    with tempfile.TemporaryDirectory(prefix="sp-traces-") as d:
        session = session_for(args.profile, Path(d) / "run", "manual")
        try:
            session.start()
            url = session.profile.entry_url + "api/hello"
            wrk(url, 3, args.conns)  # warm up
            on: list[float] = []
            off: list[float] = []
            engine_cpu: list[float] = []  # % of one core the engine's thread used during "on" runs
            for i in range(args.pairs):
                order = ("on", "off") if i % 2 == 0 else ("off", "on")
                pair = {}
                for mode in order:
                    time.sleep(1.2)  # nginx's 1 s log flush
                    session.tick_metrics()  # catch up with what was logged meanwhile (not timed)
                    if mode == "on":
                        thread = session.start_metrics(args.hz)
                        time.sleep(0.3)
                        assert thread.native_id is not None
                        c0, w0 = thread_cpu_seconds(thread.native_id), time.monotonic()
                    pair[mode] = wrk(url, args.seconds, args.conns)
                    if mode == "on":
                        engine_cpu.append((thread_cpu_seconds(thread.native_id) - c0) / (time.monotonic() - w0) * 100)
                        session.stop_metrics()
                on.append(pair["on"])
                off.append(pair["off"])
                print(f"pair {i + 1} ({order[0]} first): on {pair['on']:,.0f}  off {pair['off']:,.0f}  "
                      f"ratio {pair['on'] / pair['off']:.3f}", flush=True)
            ratios = [a / b for a, b in zip(on, off, strict=True)]
            print(f"median on {med(on):,.0f} req/s, off {med(off):,.0f} req/s; ratio of medians "
                  f"{med(on) / med(off):.3f}; median of pair ratios {med(ratios):.3f} "
                  f"(min {min(ratios):.3f}, max {max(ratios):.3f}); the engine's thread (counts + traces) used "
                  f"{med(engine_cpu):.2f} % of a core (median of the 'on' runs)")
            time.sleep(1.2)
            session.tick_metrics()
            print(f"traces held: {session.traces_held()}; {len(session.traces())} kept, e.g. "
                  f"{session.traces(limit=1)[0].nodes if session.traces() else ()}")
            print(f"{machine()} (after)")
        finally:
            session.close()


def cmd_ingest(args: argparse.Namespace) -> None:
    from stackpanel.core.metrics.ingest import AccessLogIngest
    from stackpanel.core.metrics.synthetic import trace_lines
    from stackpanel.core.metrics.tracing import TraceCollector

    print(machine())
    path = [("edge", "nginx", 11, "web"), ("web", "apache", 22, "app"), ("app", "gunicorn", 33, "-")]
    chunks = []
    for c in range(args.chunks):
        by_node: dict[str, list[str]] = {"edge": [], "web": [], "app": []}
        for i in range(args.lines):
            for node, line in trace_lines(f"{c:04x}{i:028x}", path, start=1.75e9 + c, duration=0.001 + i * 1e-7,
                                          status=500 if i % 100 == 7 else 200):
                by_node[node].append(line)
        chunks.append({n: ("\n".join(v) + "\n").encode() for n, v in by_node.items()})
    times: dict[str, list[float]] = {"off": [], "on": []}
    collector = TraceCollector("edge")
    ingests = {mode: {n: AccessLogIngest() for n in ("app", "web", "edge")} for mode in times}
    for n, ingest in ingests["on"].items():
        collector.add_node(n)
        ingest.line_sink = lambda lines, n=n: collector.feed(n, lines)
    for k, chunk in enumerate(chunks):
        for mode in (("on", "off") if k % 2 else ("off", "on")):
            collector.now = float(k)
            t = time.thread_time()
            for n in ("app", "web", "edge"):
                ingests[mode][n].feed(chunk[n])
            if mode == "on":
                collector.complete(float(k))
                collector.publish()
            times[mode].append(time.thread_time() - t)
    lines = 3 * args.lines
    off, on = med(times["off"]) / lines * 1e6, med(times["on"]) / lines * 1e6
    print(f"{args.chunks} chunks of {args.lines} requests x 3 tiers: median {off:.3f} us/line without traces, "
          f"{on:.3f} us/line with (+{on - off:.3f} us/line, x{on / off:.2f}); "
          f"{1e6 / on:,.0f} lines/s with traces on one core")
    print(f"collector holds {collector.sizes()}, completed {collector.completed_total}")


def cmd_soak(args: argparse.Namespace) -> None:
    print(machine(), flush=True)
    tracemalloc.start()
    me = psutil.Process()
    with tempfile.TemporaryDirectory(prefix="sp-traces-soak-") as d:
        session = session_for(args.profile, Path(d) / "run", "thread")
        script = Path(d) / "mix.lua"
        script.write_text(MIX_LUA)
        try:
            session.start()
            url = session.profile.entry_url
            seconds = args.minutes * 60
            wrk_proc = subprocess.Popen(["wrk", "-t1", f"-c{args.conns}", f"-d{seconds:g}s", "-s", str(script), url],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            t0 = time.monotonic()
            print("min  rss_MB  heap_KB  requests  completed  recent failed slowest pending_lines waiting  load1")
            while wrk_proc.poll() is None:
                time.sleep(args.every)
                gc.collect()
                snap = session.metrics_snapshot()
                entry = snap.node(session.profile.entry)
                held = session.traces_held()
                print(f"{(time.monotonic() - t0) / 60:4.1f} {me.memory_info().rss / 2**20:7.1f} "
                      f"{tracemalloc.get_traced_memory()[0] / 1024:8.0f} {entry.requests_total if entry else 0:9,} "
                      f"{held['completed']:10,} {held['recent']:6} {held['failed']:6} {held['slowest']:7} "
                      f"{held['pending_lines']:13,} {held['waiting']:7}  {os.getloadavg()[0]:.2f}", flush=True)
            out = wrk_proc.stdout.read() if wrk_proc.stdout else ""
            print(out.strip().splitlines()[-3:] if out else "")
            print(f"{machine()} (after)")
        finally:
            session.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("ab")
    p.add_argument("--profile", default="nginx-uvicorn")
    p.add_argument("--pairs", type=int, default=6)
    p.add_argument("--seconds", type=float, default=8)
    p.add_argument("--conns", type=int, default=32)
    p.add_argument("--hz", type=float, default=1.0)
    p = sub.add_parser("ingest")
    p.add_argument("--lines", type=int, default=5000)
    p.add_argument("--chunks", type=int, default=40)
    p = sub.add_parser("soak")
    p.add_argument("--profile", default="nginx-uvicorn")
    p.add_argument("--minutes", type=float, default=30)
    p.add_argument("--every", type=float, default=30)
    p.add_argument("--conns", type=int, default=32)
    args = ap.parse_args()
    {"ab": cmd_ab, "ingest": cmd_ingest, "soak": cmd_soak}[args.cmd](args)


if __name__ == "__main__":
    main()
