"""Access-log ingest throughput: stackpanel's chunked parser vs a per-line regex parser.

    .venv/bin/python benchmarks/bench_ingest.py [--lines 1000000] [--runs 5] [--regex-lines 200000]

Generates realistic lines of all four tiers (nginx, apache, gunicorn, uvicorn; see
``stackpanel.core.metrics.synthetic``) and measures, single-threaded, lines/s (median of ``--runs``):

* ``parse_chunk, 1 chunk``: ``parse_chunk`` on the whole buffer;
* ``parse_chunk, 1 MiB chunks``: the same split in ~1 MiB pieces (what a tick reads at ~25k lines/s);
* ``AccessLogIngest.poll from file``: the real path: file -> LogTailer (pread, partial-line carry)
  -> parse, written in ~1 MiB appends with one poll after each (only the polls are timed);
* ``regex per line``: a typical compiled-regex parser doing the same counting (per pid, status
  class, route, 5xx per route) and parsing every latency, on the first ``--regex-lines`` lines.

Pin to one core for a "one core" figure: ``taskset -c 0 .venv/bin/python benchmarks/bench_ingest.py``.
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from stackpanel.core.machine import cpu_model
from stackpanel.core.metrics.ingest import AccessLogIngest, parse_chunk
from stackpanel.core.metrics.synthetic import random_lines

PIDS = {
    "nginx": (4101, 4102),
    "apache": (4201, 4202, 4203, 4204),
    "gunicorn": (4301, 4302, 4303, 4304),
    "uvicorn": (4401, 4402, 4403, 4404),
}

LINE_RE = re.compile(rb"^(\d+) (\d{3}) (\S+) (\S+) (\S+) ")


def regex_parse(data: bytes) -> tuple[int, int]:
    """A straightforward per-line parser: one regex match per line, all fields decoded."""
    by_pid: Counter[int] = Counter()
    by_class: Counter[str] = Counter()
    by_route: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    latencies: list[float] = []
    bad = 0
    for line in data.splitlines():
        m = LINE_RE.match(line)
        if m is None:
            bad += 1
            continue
        pid_b, status_b, secs, route_b, _rid = m.groups()
        status = int(status_b)
        route = route_b.decode()
        by_pid[int(pid_b)] += 1
        by_class[f"{status // 100}xx"] += 1
        by_route[route] += 1
        if status >= 500:
            errors[route] += 1
        if secs != b"-":
            latencies.append(int(secs[:-2]) * 1e-6 if secs.endswith(b"us") else float(secs))
    return sum(by_pid.values()), bad


def chunks_of(data: bytes, size: int) -> list[bytes]:
    """Split at newlines into pieces of about ``size`` bytes."""
    out = []
    start = 0
    while start < len(data):
        end = data.find(b"\n", min(start + size, len(data) - 1))
        end = len(data) if end < 0 else end + 1
        out.append(data[start:end])
        start = end
    return out


def timed(fn: Callable[[], int], runs: int) -> tuple[float, int]:
    times = []
    n = 0
    for _ in range(runs):
        t0 = time.perf_counter()
        n = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--regex-lines", type=int, default=200_000)
    args = ap.parse_args()

    t0 = time.perf_counter()
    data = "".join(r[4] + "\n" for r in random_lines(args.lines, pids=PIDS, seed=7)).encode()  # type: ignore[arg-type]
    gen_s = time.perf_counter() - t0
    n_lines = data.count(b"\n")
    regex_data = b"".join(data.splitlines(keepends=True)[: args.regex_lines])
    n_regex = regex_data.count(b"\n")
    pieces = chunks_of(data, 1 << 20)

    def one_chunk() -> int:
        return parse_chunk(data).lines

    def mib_chunks() -> int:
        return sum(parse_chunk(c).lines for c in pieces)

    tmpdir = tempfile.TemporaryDirectory()

    poll_seconds: list[float] = []

    def from_file() -> int:
        """Only the polls are timed (the appends stand in for the server)."""
        path = Path(tmpdir.name) / f"access-{time.perf_counter_ns()}.log"
        ing = AccessLogIngest(path)
        spent = 0.0
        with open(path, "ab", buffering=0) as f:
            for c in pieces:
                f.write(c)
                t = time.perf_counter()
                ing.poll()
                spent += time.perf_counter() - t
        ing.close()
        path.unlink()
        poll_seconds.append(spent)
        return ing.totals.lines

    def regex() -> int:
        return regex_parse(regex_data)[0]

    results = []
    for name, fn, expect in (
        ("parse_chunk, 1 chunk", one_chunk, n_lines),
        ("parse_chunk, 1 MiB chunks", mib_chunks, n_lines),
        ("AccessLogIngest.poll from file", from_file, n_lines),
        ("regex per line", regex, n_regex),
    ):
        med, n = timed(fn, args.runs)
        assert n == expect, (name, n, expect)  # every line counted
        if fn is from_file:
            med = statistics.median(poll_seconds)
        results.append((name, n, med, n / med))
    tmpdir.cleanup()

    cpu = cpu_model()
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    print(f"python {platform.python_version()} | nproc {os.cpu_count()} (allowed here: {affinity}) | cpu {cpu}")
    print(f"{n_lines} lines, {len(data) / 1e6:.1f} MB, mixed tiers (generated in {gen_s:.1f} s); "
          f"median of {args.runs} runs")
    print()
    print(f"| {'parser':32} | {'lines':>9} | {'median s':>8} | {'lines/s':>11} |")
    print(f"|{'-' * 34}|{'-' * 11}|{'-' * 10}|{'-' * 13}|")
    for name, n, med, rate in results:
        print(f"| {name:32} | {n:>9} | {med:>8.3f} | {rate:>11,.0f} |")
    regex_rate = results[-1][3]
    print()
    for name, _n, _med, rate in results[:-1]:
        print(f"{name}: {rate / regex_rate:.1f}x the regex parser")


if __name__ == "__main__":
    main()
