"""Syscalls per request, per tier: where a proxied request's kernel crossings go, in a count the
shared machine's noise hardly moves (unlike req/s or CPU-µs, which swing 3× with the box's load).

    .venv/bin/python benchmarks/bench_syscalls.py [CASE ...] [--seconds 3] [--connections 16]

CASE names come from bench_topologies.py's proxy cases (substring match; default: direct,
nginx, nginx → gunicorn, apache and nginx → apache as rendered). Each case: the profile comes up
with 2 app workers, is warmed up with wrk, then every process of every tier is traced with
`strace -c -f` while wrk sends load; the counts are divided by the requests wrk completed.
strace slows the servers down a lot: read the counts, not the rates. epoll_wait and friends
depend on timing (a slower server batches more); read/write/send/recv/accept/close do not.
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_topologies import PROXY_CASES, Case

from stackpanel.core.bench import free_port_offset, with_app_workers
from stackpanel.core.loadgen.wrk import run_wrk
from stackpanel.core.profiles.library import builtin_dir
from stackpanel.core.profiles.loader import load_profile
from stackpanel.core.session import StackSession

DEFAULT = ["direct", "nginx (as rendered)", "nginx → gunicorn (as rendered)", "apache (as rendered)",
           "nginx → apache (as rendered)"]
_ROW = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:(\d+)\s+)?(\w+)$")


def parse_strace_summary(text: str) -> dict[str, int]:
    """{syscall: calls} from `strace -c` output (the 'total' row left out)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        m = _ROW.match(line)
        if m and m.group(3) != "total":
            out[m.group(3)] = int(m.group(1))
    return out


def measure(case: Case, seconds: float, connections: int) -> tuple[int, dict[str, dict[str, int]]]:
    profile = load_profile(builtin_dir() / f"{case.profile}.yaml")
    offset = free_port_offset([p for n in profile.nodes.values() for _h, p in n.listen_addresses])
    profile = with_app_workers(profile.with_port_offset(offset), 2)
    with tempfile.TemporaryDirectory(prefix="stackpanel-syscalls-") as tmp:
        session = StackSession(profile, run_dir=Path(tmp) / "run")
        if case.patch is not None:
            case.patch(session)
        session.start()
        try:
            url = profile.entry_url.rstrip("/") + "/api/hello"
            run_wrk(url, connections=connections, duration_s=1)  # warm-up: pools filled, workers up
            tracers = {}
            for node in session.snapshot().nodes:
                pids = sorted({p for p in (node.pid, *node.worker_pids) if p})
                out = Path(tmp) / f"{node.name}.strace"
                argv = ["strace", "-c", "-f", "-q", "-o", str(out)] + [a for p in pids for a in ("-p", str(p))]
                tracers[node.name] = (subprocess.Popen(argv, stderr=subprocess.DEVNULL), out)
            time.sleep(1.0)  # strace attaches to each thread
            result = run_wrk(url, connections=connections, duration_s=seconds)
            for proc, _ in tracers.values():
                proc.send_signal(signal.SIGINT)
            counts = {}
            for name, (proc, out) in tracers.items():
                proc.wait(timeout=30)
                counts[name] = parse_strace_summary(out.read_text())
            return result.requests_ok, counts
        finally:
            session.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cases", nargs="*", default=DEFAULT)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--connections", type=int, default=16)
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("strace -p needs root (or ptrace_scope 0)", file=sys.stderr)
    cases = [c for want in args.cases for c in PROXY_CASES if want == c.name] or \
        [c for c in PROXY_CASES if any(w in c.name for w in args.cases)]
    print("| case | requests | tier | syscalls/request | top calls per request |\n|---|---:|---|---:|---|")
    for case in cases:
        requests, counts = measure(case, args.seconds, args.connections)
        for tier, calls in counts.items():
            per = {k: v / max(1, requests) for k, v in calls.items()}
            top = ", ".join(f"{k} {v:.2f}" for k, v in sorted(per.items(), key=lambda kv: -kv[1])[:7])
            print(f"| {case.name} | {requests:,} | {tier} | {sum(per.values()):.1f} | {top} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
