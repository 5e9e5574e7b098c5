"""Topology costs, measured with the comparison engine (issue 6 acceptance figures).

    .venv/bin/python benchmarks/bench_topologies.py topologies [--reps 3] [--duration 5] [--workers 2]
    .venv/bin/python benchmarks/bench_topologies.py proxy      [--reps 3] [--duration 5] [--workers 2]
    .venv/bin/python benchmarks/bench_topologies.py generators [--reps 3] [--duration 5] [--workers 2]
    common: [--connections 64] [--warmup 1] [--path /api/hello] [--wrk] [--json FILE] [--markdown FILE]

* ``topologies``: every built-in proxied profile and ``uvicorn-workers``, all with ``--workers``
  app workers (``compare_profiles(workers=N)``), same load.
* ``proxy``: direct uvicorn vs nginx → uvicorn as rendered, and variants of the rendered
  nginx.conf / uvicorn logging config changed by hand before start (``before_start`` hook):
  nginx worker_processes, access_log off / unbuffered, proxy_buffering off, upstream keepalive pool,
  uvicorn's access log off. Each variant is one profile brought up alone.
* ``generators``: the built-in generator vs wrk against direct uvicorn, generator CPU next to it.

Every repetition runs all cases once, in an order rotated by one each repetition; a case's ratio
is taken against the reference case *of the same repetition* (so slow phases of the shared machine
hit both), and medians are reported. Besides req/s, each tier's CPU cost per request (CPU-µs per
successful request: CPU % of its processes over the load / req/s) says where the time goes.
Only loopback; every run is bounded (duration + timeouts).
"""
from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stackpanel.core.bench import ProfileRun, compare_profiles, machine_info
from stackpanel.core.loadgen import wrk_available
from stackpanel.core.session import StackSession

PROXIED = ["nginx-uvicorn", "nginx-gunicorn-uvicorn", "nginx-gunicorn-flask", "nginx-split", "apache-uvicorn",
           "nginx-apache-uvicorn"]
DIRECT = "uvicorn-workers"

Patch = Callable[[StackSession], None]


# -- config edits for the proxy variants ---------------------------------------------------------------


def _edit(session: StackSession, kind_suffix: str, edit: Callable[[str], str]) -> None:
    """Apply ``edit`` to every rendered file whose name ends in ``kind_suffix`` (e.g. 'nginx-web.conf')."""
    hit = False
    for node in session.stack.nodes.values():
        files = node.files  # a dict: edited in place before the supervisor writes it
        for path in list(files):
            if path.name.endswith(kind_suffix):
                new = edit(files[path])
                hit |= new != files[path]
                files[path] = new  # type: ignore[index]
    if not hit:
        raise RuntimeError(f"the edit changed no rendered file ending in {kind_suffix}")


def nginx_sub(pattern: str, repl: str) -> Patch:
    return lambda s: _edit(s, ".conf", lambda t: re.sub(pattern, repl, t, flags=re.M))


def uvicorn_access_off(session: StackSession) -> None:
    def edit(text: str) -> str:
        conf = json.loads(text)
        conf["loggers"]["uvicorn.access"] = {"handlers": [], "level": "WARNING", "propagate": False}
        return json.dumps(conf, indent=2) + "\n"

    _edit(session, ".logging.json", edit)


def chain(*patches: Patch) -> Patch:
    def run(session: StackSession) -> None:
        for p in patches:
            p(session)

    return run


NGINX_WP2 = nginx_sub(r"^worker_processes \d+;", "worker_processes 2;")
NGINX_LOG_OFF = nginx_sub(r"^(\s*)access_log .*;$", r"\1access_log off;")
NGINX_NO_BUFFERING = nginx_sub(r"^(\s*)proxy_pass (\S+);$", r"\1proxy_pass \2;\n\1proxy_buffering off;")
NGINX_POOL_128 = nginx_sub(r"^(\s*)keepalive \d+;", r"\1keepalive 128;")
NGINX_LOG_64K = nginx_sub(r"buffer=8k flush=1s;", "buffer=64k flush=1s;")
NGINX_REUSEPORT = nginx_sub(r"^(\s*listen \S+) default_server;", r"\1 default_server reuseport;")


def apache_sub(pattern: str, repl: str) -> Patch:
    return lambda s: _edit(s, ".conf", lambda t: re.sub(pattern, repl, t, flags=re.M) if "ServerRoot" in t else t)


APACHE_BUFFERED_LOGS = apache_sub(r"^(CustomLog .*)$", r"BufferedLogs On\n\1")
APACHE_THREADS_32 = apache_sub(r"^(ThreadLimit|ThreadsPerChild|MaxRequestWorkers) 128$", r"\1 32")
APACHE_2_CHILDREN = chain(apache_sub(r"^(StartServers|ServerLimit) 1$", r"\1 2"),
                          apache_sub(r"^(ThreadLimit|ThreadsPerChild) 128$", r"\1 64"))
APACHE_MPM_WORKER = apache_sub(r"^LoadModule mpm_event_module (\S+)/mod_mpm_event\.so$",
                               r"LoadModule mpm_worker_module \1/mod_mpm_worker.so")
APACHE_TCP_KEEPALIVE = apache_sub(r"^(ProxyPass \S+ \S+ .*)$", r"\1 keepalive=On")
APACHE_POOL_16 = apache_sub(r"^(ProxyPass \S+ \S+ .*)$", r"\1 max=16")
APACHE_NO_REUSE = apache_sub(r"^(ProxyPass \S+ \S+ .*)$", r"\1 disablereuse=On")
# diagnostics (not proposals): what the per-request expressions and the request id cost
APACHE_NO_EXPRS = chain(apache_sub(r"^\s*<If \"-n %\{HTTP:Content-Length\}.*\n.*\n\s*</If>\n", ""),
                        apache_sub(r"^<If \"! \(%\{SERVER_NAME\}.*\n.*\n</If>\n", ""))
APACHE_NO_REQUEST_ID = chain(apache_sub(r"^RequestHeader setifempty X-Request-ID .*\n", ""),
                             apache_sub(r"^Header always set X-Request-ID .*\n", ""))
# the floor (diagnostics): what nginx / Apache cost with every per-request extra of ours removed
NGINX_NO_REQUEST_ID = chain(nginx_sub(r"^\s*add_header X-Request-ID .*\n", ""),
                            nginx_sub(r"^\s*proxy_set_header X-Request-ID .*\n", ""))
NGINX_FLOOR = chain(NGINX_LOG_OFF, NGINX_NO_BUFFERING, NGINX_NO_REQUEST_ID)
APACHE_LOG_OFF = apache_sub(r"^CustomLog .*\n", "")
APACHE_FLOOR = chain(APACHE_MPM_WORKER, APACHE_NO_EXPRS, APACHE_NO_REQUEST_ID, APACHE_LOG_OFF)
NGINX_NO_KEEPALIVE = chain(
    nginx_sub(r"^\s*keepalive \d+;\n", ""),
    nginx_sub(r"^\s*proxy_set_header Connection \"\";\n", ""),
)


@dataclass(frozen=True)
class Case:
    name: str
    profile: str
    patch: Patch | None = None
    generator: str | None = None  # None: the command line's choice


PROXY_CASES = [
    Case("direct", DIRECT),
    Case("nginx (as rendered)", "nginx-uvicorn"),
    Case("nginx worker_processes 2", "nginx-uvicorn", NGINX_WP2),
    Case("nginx access_log off", "nginx-uvicorn", NGINX_LOG_OFF),
    Case("nginx proxy_buffering off", "nginx-uvicorn", NGINX_NO_BUFFERING),
    Case("nginx keepalive pool 128", "nginx-uvicorn", NGINX_POOL_128),
    Case("nginx pool 128 + proxy_buffering off", "nginx-uvicorn", chain(NGINX_POOL_128, NGINX_NO_BUFFERING)),
    Case("nginx no upstream keepalive", "nginx-uvicorn", NGINX_NO_KEEPALIVE),
    Case("direct, uvicorn access log off", DIRECT, uvicorn_access_off),
    Case("nginx, uvicorn access log off", "nginx-uvicorn", uvicorn_access_off),
    Case("nginx access_log buffer=64k", "nginx-uvicorn", NGINX_LOG_64K),
    Case("nginx reuseport", "nginx-uvicorn", NGINX_REUSEPORT),
    Case("nginx without the request id", "nginx-uvicorn", NGINX_NO_REQUEST_ID),
    Case("nginx floor (no log, no buffering, no request id)", "nginx-uvicorn", NGINX_FLOOR),
    Case("nginx → gunicorn (as rendered)", "nginx-gunicorn-uvicorn"),
    Case("nginx → gunicorn, proxy_buffering off", "nginx-gunicorn-uvicorn", NGINX_NO_BUFFERING),
    Case("apache (as rendered)", "apache-uvicorn"),
    Case("apache BufferedLogs On", "apache-uvicorn", APACHE_BUFFERED_LOGS),
    Case("apache ThreadsPerChild 32", "apache-uvicorn", APACHE_THREADS_32),
    Case("apache 2 children x 64 threads", "apache-uvicorn", APACHE_2_CHILDREN),
    Case("apache mpm_worker", "apache-uvicorn", APACHE_MPM_WORKER),
    Case("apache ProxyPass keepalive=On", "apache-uvicorn", APACHE_TCP_KEEPALIVE),
    Case("apache ProxyPass disablereuse=On", "apache-uvicorn", APACHE_NO_REUSE),
    Case("apache ProxyPass max=16", "apache-uvicorn", APACHE_POOL_16),
    Case("apache without the <If> expressions", "apache-uvicorn", APACHE_NO_EXPRS),
    Case("apache without the request id", "apache-uvicorn", APACHE_NO_REQUEST_ID),
    Case("apache without its access log", "apache-uvicorn", APACHE_LOG_OFF),
    Case("apache floor (worker MPM, no log, no expressions, no request id)", "apache-uvicorn", APACHE_FLOOR),
    Case("nginx → apache (as rendered)", "nginx-apache-uvicorn"),
    Case("nginx → apache BufferedLogs On", "nginx-apache-uvicorn", APACHE_BUFFERED_LOGS),
    Case("nginx → apache mpm_worker", "nginx-apache-uvicorn", APACHE_MPM_WORKER),
]


# -- running ----------------------------------------------------------------------------------------------


def run_case(case: Case, args: argparse.Namespace) -> ProfileRun:
    generator = case.generator or ("wrk" if args.wrk else "builtin")

    def before_start(_name: str, session: StackSession) -> None:
        if case.patch is not None:
            case.patch(session)

    c = compare_profiles([case.profile], connections=args.connections, duration_s=args.duration,
                         warmup_s=args.warmup, path=args.path, generator=generator,  # type: ignore[arg-type]
                         workers=args.workers, before_start=before_start)
    return c.runs[0]


def us_per_request(cpu_percent: float | None, rps: float) -> float:
    if cpu_percent is None or not rps or not math.isfinite(rps):
        return math.nan
    return cpu_percent / 100.0 / rps * 1e6


def record(case: Case, rep: int, position: int, r: ProfileRun) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "case": case.name, "profile": case.profile, "rep": rep, "position": position, "ok": r.ok,
        "reason": r.reason, "generator": r.generator, "rps": r.throughput_rps, "p50_ms": r.latency_p50_ms,
        "p99_ms": r.latency_p99_ms, "errors": r.errors_total, "gen_cpu": r.generator_cpu_percent,
        "server_cpu": r.server_cpu_percent(), "app_workers": r.app_workers,
        "node_cpu": dict(r.node_cpu_percent), "clean_stop": r.clean_stop,
        "gen_us": us_per_request(r.generator_cpu_percent, r.throughput_rps),
        "node_us": {n: us_per_request(v, r.throughput_rps) for n, v in r.node_cpu_percent.items()},
        "workers": [(w.node, w.role, w.requests, w.cpu_percent) for w in r.workers],
    }
    return rec


def run_matrix(cases: list[Case], reference: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for rep in range(args.reps):
        k = rep % len(cases)
        order = cases[k:] + cases[:k]
        rep_records = []
        for pos, case in enumerate(order):
            t0 = time.monotonic()
            r = run_case(case, args)
            rec = record(case, rep, pos, r)
            rep_records.append(rec)
            status = (f"{r.throughput_rps:9,.0f} req/s  p99 {r.latency_p99_ms:6.1f} ms  "
                      f"gen {r.generator_cpu_percent:4.0f}%  server {r.server_cpu_percent() or 0:4.0f}%"
                      if r.ok else f"FAILED: {r.reason[:120]}")
            print(f"rep {rep} #{pos} {case.name:<34} {status}  ({time.monotonic() - t0:.0f} s)", flush=True)
        ref = next((x for x in rep_records if x["case"] == reference and x["ok"]), None)
        for rec in rep_records:
            rec["ratio"] = rec["rps"] / ref["rps"] if ref and rec["ok"] else math.nan
        records += rep_records
    return records


def run_pairs(cases: list[Case], reference: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """A/B pairs: each case right next to a fresh run of the reference (order alternating), so the
    ratio of a pair is taken ~10 s apart rather than a whole repetition apart."""
    ref_case = next(c for c in cases if c.name == reference)
    records: list[dict[str, Any]] = []
    pair = 0
    for rep in range(args.reps):
        for i, case in enumerate(c for c in cases if c.name != reference):
            order = [ref_case, case] if (rep + i) % 2 == 0 else [case, ref_case]
            recs = []
            for pos, c in enumerate(order):
                r = run_case(c, args)
                rec = record(c, rep, pos, r)
                rec["pair"] = pair
                recs.append(rec)
                print(f"rep {rep} pair {pair} #{pos} {c.name:<34} "
                      + (f"{r.throughput_rps:9,.0f} req/s  gen {r.generator_cpu_percent:4.0f}%  "
                         f"server {r.server_cpu_percent() or 0:4.0f}%" if r.ok else f"FAILED: {r.reason[:120]}"),
                      flush=True)
            ref = next(x for x in recs if x["case"] == reference)
            for rec in recs:
                rec["ratio"] = rec["rps"] / ref["rps"] if ref["ok"] and rec["ok"] else math.nan
            records += recs
            pair += 1
    return records


# -- reporting ----------------------------------------------------------------------------------------


def med(values: list[float]) -> float:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.median(vals) if vals else math.nan


def fmt(x: float, spec: str = ",.0f") -> str:
    return "-" if x is None or not math.isfinite(x) else format(x, spec)


def total_us(rec: dict[str, Any]) -> float:
    """CPU-µs per successful request spent by the generator and every tier together."""
    parts = [rec["gen_us"], *rec["node_us"].values()]
    return sum(parts) if all(p is not None and math.isfinite(p) for p in parts) else math.nan


def summary_table(cases: list[Case], records: list[dict[str, Any]], reference: str) -> str:
    nodes = list(dict.fromkeys(n for rec in records for n in rec["node_us"]))
    head = ["case", "req/s (median)", "min–max", f"ratio to {reference}", "p50 ms", "p99 ms", "gen CPU %",
            "server CPU %", "gen µs/req"] + [f"{n} µs/req" for n in nodes] + [
            "total µs/req", "ratio by CPU cost", "errors"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    ref_total = med([total_us(r) for r in records if r["case"] == reference and r["ok"]])
    for case in cases:
        recs = [r for r in records if r["case"] == case.name]
        ok = [r for r in recs if r["ok"]]
        if not ok:
            lines.append(f"| {case.name} | did not run: {recs[0]['reason'][:80] if recs else '?'} |"
                         + " |" * (len(head) - 2))
            continue
        rps = [r["rps"] for r in ok]
        row = [
            case.name, fmt(med(rps)), f"{fmt(min(rps))}–{fmt(max(rps))}", fmt(med([r["ratio"] for r in ok]), ".2f"),
            fmt(med([r["p50_ms"] for r in ok]), ".2f"), fmt(med([r["p99_ms"] for r in ok]), ".1f"),
            fmt(med([r["gen_cpu"] for r in ok])), fmt(med([r["server_cpu"] for r in ok])),
            fmt(med([r["gen_us"] for r in ok]), ".0f"),
        ]
        row += [fmt(med([r["node_us"].get(n, math.nan) for r in ok]), ".0f") for n in nodes]
        total = med([total_us(r) for r in ok])
        row += [fmt(total, ".0f"), fmt(ref_total / total, ".2f") if total else "-"]
        row.append(str(sum(r["errors"] for r in ok)))
        if len(ok) < len(recs):
            row[0] += f" ({len(recs) - len(ok)} failed)"
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def runs_table(records: list[dict[str, Any]]) -> str:
    if records and "pair" in records[0]:
        lines = ["| pair | order: req/s (ratio) |", "|---|---|"]
        for pair in sorted({r["pair"] for r in records}):
            recs = sorted((r for r in records if r["pair"] == pair), key=lambda r: r["position"])
            items = [f"{r['case']} {fmt(r['rps'])} ({fmt(r['ratio'], '.2f')})" for r in recs]
            lines.append(f"| {pair} | " + " → ".join(items) + " |")
        return "\n".join(lines)
    reps = sorted({r["rep"] for r in records})
    lines = ["| rep | order: req/s (ratio) |", "|---|---|"]
    for rep in reps:
        recs = sorted((r for r in records if r["rep"] == rep), key=lambda r: r["position"])
        items = [f"{r['case']} {fmt(r['rps'])} ({fmt(r['ratio'], '.2f')})" if r["ok"] else f"{r['case']} FAILED"
                 for r in recs]
        lines.append(f"| {rep} | " + " → ".join(items) + " |")
    return "\n".join(lines)


def versions() -> str:
    parts = []
    for exe, argv in (("nginx", ["nginx", "-v"]), ("apache2", ["apache2", "-v"]), ("wrk", ["wrk", "-v"])):
        if shutil.which(exe):
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            text = (out.stdout + out.stderr).strip().splitlines()
            parts.append(text[0] if text else exe)
    import uvicorn

    parts.append(f"uvicorn {uvicorn.__version__}")
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["topologies", "proxy", "generators"])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--path", default="/api/hello")
    ap.add_argument("--wrk", action="store_true", help="load with wrk (default: the built-in generator)")
    ap.add_argument("--cases", help="proxy: comma-separated subset of case names (substring match)")
    ap.add_argument("--pairs", action="store_true",
                    help="proxy: run each case as an A/B pair with a fresh reference run (less drift)")
    ap.add_argument("--json", type=Path, help="write every record as JSON")
    ap.add_argument("--markdown", type=Path, help="append the report to this file")
    args = ap.parse_args(argv)

    if args.what == "topologies":
        cases = [Case(DIRECT, DIRECT)] + [Case(p, p) for p in PROXIED]
        reference = DIRECT
    elif args.what == "proxy":
        cases = PROXY_CASES
        if args.cases:
            wanted = [w.strip() for w in args.cases.split(",")]
            cases = [c for c in cases if c.name == "direct" or any(w in c.name for w in wanted)]
        reference = "direct"
    else:
        if not wrk_available():
            print("wrk is not installed", file=sys.stderr)
            return 1
        cases = [Case("wrk", DIRECT, generator="wrk"), Case("builtin", DIRECT, generator="builtin")]
        reference = "wrk"

    machine = machine_info()
    started = time.strftime("%Y-%m-%d %H:%M")
    print(f"# {args.what}: {machine}", flush=True)
    records = run_pairs(cases, reference, args) if args.pairs else run_matrix(cases, reference, args)
    cmd = "    .venv/bin/python benchmarks/bench_topologies.py " + " ".join(sys.argv[1:] if argv is None else argv)
    gen = "per case" if args.what == "generators" else ("wrk" if args.wrk else "built-in")
    report = "\n".join([
        f"### {args.what} ({started})",
        "",
        "```",
        cmd.strip(),
        "```",
        "",
        f"- load: {args.connections} connections, {args.duration:g} s per case after {args.warmup:g} s warm-up, "
        f"GET {args.path}, {gen} generator, {args.workers} app workers per profile, {args.reps} repetitions "
        + ("(each case as an A/B pair with its own reference run, order alternating)" if args.pairs
           else "(order rotated each repetition)") + ", medians",
        f"- machine: nproc {machine['nproc']}, {machine['cpu_model']}, Python {machine['python']}, "
        f"{machine['system']}, load average at start {machine.get('loadavg_1m', '?')}; {versions()}",
        "",
        summary_table(cases, records, reference),
        "",
        "Runs (in order):",
        "",
        runs_table(records),
        "",
    ])
    print()
    print(report)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "args": vars(args) | {"json": str(args.json),
                                         "markdown": str(args.markdown)}, "records": records},
                                        indent=1, default=str) + "\n")
    if args.markdown:
        with args.markdown.open("a", encoding="utf-8") as f:
            f.write(report + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
