"""Built-in load generator vs wrk against a direct uvicorn (--workers 2, access log off).

    .venv/bin/python benchmarks/bench_loadgen.py [--app fastapi|asgi] [--reps 3] [--duration 5]
                                                 [--connections 64] [--markdown FILE]

Starts uvicorn on a free loopback port with a one-endpoint app (GET /api/hello), warms it up,
then runs wrk (-t2), the built-in generator in one process and in two processes, each for
``--duration`` seconds, ``--reps`` times in rotating order, and prints medians, the ratio of
each to wrk's rate, the generator's own CPU % and the server workers' CPU %. Only loopback is
ever targeted; every run is bounded in time.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from stackpanel.core.loadgen import LoadConfig, LoadResult, run_load, run_wrk, wrk_available
from stackpanel.core.machine import cpu_model

APPS = {
    "fastapi": (
        "from fastapi import FastAPI\n"
        "app = FastAPI()\n\n"
        "@app.get('/api/hello')\n"
        "async def hello():\n"
        "    return {'message': 'hello'}\n"
    ),
    "asgi": (
        "BODY = b'{\"message\":\"hello\"}'\n"
        "HEADERS = [(b'content-type', b'application/json'), (b'content-length', str(len(BODY)).encode())]\n\n"
        "async def app(scope, receive, send):\n"
        "    if scope['type'] != 'http':\n"
        "        return\n"
        "    await send({'type': 'http.response.start', 'status': 200, 'headers': HEADERS})\n"
        "    await send({'type': 'http.response.body', 'body': BODY})\n"
    ),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, app: str, workers: int) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="bench_loadgen_")
        Path(self.dir.name, "benchapp.py").write_text(APPS[app])
        self.port = free_port()
        self.argv = [
            sys.executable, "-m", "uvicorn", "benchapp:app", "--app-dir", self.dir.name,
            "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(workers),
            "--no-access-log", "--log-level", "warning",
        ]
        self.proc = subprocess.Popen(self.argv, start_new_session=True, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"uvicorn exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("uvicorn did not start") from None
                time.sleep(0.1)
        time.sleep(1.0)  # let every worker finish importing
        self.ps = psutil.Process(self.proc.pid)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/hello"

    def cpu_seconds(self) -> float:
        total = 0.0
        for p in [self.ps, *self.ps.children(recursive=True)]:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
        self.dir.cleanup()


def run_tool(tool: str, server: Server, duration: float, connections: int, wrk_threads: int) -> dict:
    c0, t0 = server.cpu_seconds(), time.monotonic()
    result: LoadResult
    if tool == "wrk":
        result = run_wrk(server.url, connections=connections, duration_s=duration, threads=wrk_threads)
    else:
        processes = int(tool.rsplit("-", 1)[1].rstrip("p"))
        result = run_load(
            LoadConfig(server.url, connections=connections, duration_s=duration, processes=processes)
        )
    wall = time.monotonic() - t0
    server_cpu = 100.0 * (server.cpu_seconds() - c0) / wall
    return {
        "tool": tool,
        "rps": result.rps,
        "p50_ms": result.latency_p50_ms,
        "p99_ms": result.latency_p99_ms,
        "errors": result.errors_total,
        "gen_cpu": result.cpu_percent,
        "server_cpu": server_cpu,
        "duration_s": result.duration_s,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--app", choices=sorted(APPS), default="fastapi")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--wrk-threads", type=int, default=2)
    ap.add_argument("--tools", default="wrk,builtin-1p,builtin-2p")
    ap.add_argument("--markdown", type=Path, help="append the result table to this file")
    ap.add_argument("--json", type=Path, help="write every run as JSON lines to this file")
    args = ap.parse_args(argv)
    if not 1 <= args.reps <= 10 or not 1 <= args.duration <= 60:
        ap.error("reps must be 1-10 and duration 1-60 s")
    tools = args.tools.split(",")
    if "wrk" in tools and not wrk_available():
        print("wrk not found: comparing built-in modes only", file=sys.stderr)
        tools.remove("wrk")

    machine = {
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "loadavg_before": os.getloadavg(),
    }
    print(json.dumps(machine), flush=True)
    server = Server(args.app, args.workers)
    runs: list[dict] = []
    try:
        run_load(LoadConfig(server.url, connections=args.connections, duration_s=1.0))  # warm-up
        for rep in range(args.reps):
            order = tools[rep % len(tools):] + tools[: rep % len(tools)]
            for tool in order:
                r = run_tool(tool, server, args.duration, args.connections, args.wrk_threads)
                r["rep"] = rep
                runs.append(r)
                print(
                    f"rep {rep} {tool:11s} {r['rps']:9,.0f} req/s  p50 {r['p50_ms']:6.2f} ms  "
                    f"p99 {r['p99_ms']:6.2f} ms  errors {r['errors']}  gen CPU {r['gen_cpu']:4.0f}%  "
                    f"server CPU {r['server_cpu']:4.0f}%",
                    flush=True,
                )
                time.sleep(0.5)
    finally:
        server.stop()
    machine["loadavg_after"] = os.getloadavg()

    wrk_median = statistics.median(r["rps"] for r in runs if r["tool"] == "wrk") if "wrk" in tools else None
    cmd = "python benchmarks/bench_loadgen.py " + " ".join(sys.argv[1:] if argv is None else argv)
    lines = [
        f"### `{cmd.strip()}`",
        "",
        (
            f"uvicorn `--workers {args.workers}` ({args.app} app, GET /api/hello, access log off), "
            f"{args.connections} connections, {args.duration:g} s per run, {args.reps} repetitions "
            f"in rotating order; medians. Machine: {machine['nproc']} cores, {machine['cpu']}, "
            f"Python {machine['python']}; load average before/after "
            f"{machine['loadavg_before'][0]:.2f}/{machine['loadavg_after'][0]:.2f}."
        ),
        "",
        "| generator | req/s (median) | min–max | ratio to wrk | p50 ms | p99 ms | generator CPU % | server CPU % |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for tool in tools:
        mine = [r for r in runs if r["tool"] == tool]
        rps = [r["rps"] for r in mine]
        med = statistics.median(rps)
        ratio = f"{med / wrk_median:.2f}" if wrk_median else "–"
        lines.append(
            f"| {tool} | {med:,.0f} | {min(rps):,.0f}–{max(rps):,.0f} | {ratio} | "
            f"{statistics.median(r['p50_ms'] for r in mine):.2f} | "
            f"{statistics.median(r['p99_ms'] for r in mine):.2f} | "
            f"{statistics.median(r['gen_cpu'] for r in mine):.0f} | "
            f"{statistics.median(r['server_cpu'] for r in mine):.0f} |"
        )
    table = "\n".join(lines) + "\n"
    print()
    print(table)
    if args.markdown:
        with args.markdown.open("a") as f:
            f.write(table + "\n")
    if args.json:
        with args.json.open("w") as f:
            for r in runs:
                f.write(json.dumps({**r, **machine, "app": args.app}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
