"""Reload without a failed request (#13.4): wrk through nginx while a stack is reloaded, per case.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_reload.py [--reps 3] [--seconds 40]

Cases: nginx → gunicorn (2 UvicornWorkers) and nginx → uvicorn --workers 2, each reloaded three
times under wrk -t2 -c8 (the app's code; a worker more; a changed gunicorn config or a worker less),
one after the other as soon as the previous one is done; and nginx → gunicorn with no config
change (the code, a worker more, the code again). `--case TEXT` runs only matching cases.
Prints one line per run (requests, reloads, non-2xx, socket errors, p99 and max latency, time the
reloads took) and the medians.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from stackpanel.core.loadgen import LoadResult, run_wrk
from stackpanel.core.profiles.library import builtin_dir
from stackpanel.core.profiles.loader import load_profile
from stackpanel.core.profiles.schema import Profile
from stackpanel.core.session import StackSession
from stackpanel.core.supervise.ports import free_port_offset


def _with(profile: Profile, node: str, **update: object) -> Profile:
    nodes = {**profile.nodes, node: profile.nodes[node].model_copy(update=update)}
    shifted = profile.model_copy(update={"nodes": nodes})
    shifted._port_offset = profile.port_offset
    return shifted


def cases(offset: int) -> dict[str, tuple[Profile, str, list[Profile]]]:
    gunicorn = _with(load_profile(builtin_dir() / "nginx-gunicorn-uvicorn.yaml", port_offset=offset), "app", workers=2)
    g3 = _with(gunicorn, "app", workers=3)
    uvicorn = load_profile(builtin_dir() / "nginx-uvicorn.yaml", port_offset=offset)
    return {
        "nginx → gunicorn": (gunicorn, "hello", [gunicorn, g3, _with(g3, "app", timeout_seconds=20)]),
        # the code twice (a surge each) and a worker more: no HUP, so no wait for a worker that serves
        "nginx → gunicorn, no config change": (gunicorn, "hello", [gunicorn, g3, g3]),
        "nginx → uvicorn --workers 2": (uvicorn, "api/hello", [uvicorn, _with(uvicorn, "app", workers=3), uvicorn]),
    }


def run_case(base: Profile, path: str, reloads: list[Profile], seconds: int) -> tuple[LoadResult, float]:
    with tempfile.TemporaryDirectory() as tmp, StackSession(base, run_dir=Path(tmp) / "run") as session:
        session.start()
        out: list[LoadResult] = []
        load = threading.Thread(target=lambda: out.append(run_wrk(base.entry_url + path, connections=8,
                                                                  duration_s=seconds, threads=2, timeout_s=10)))
        load.start()
        time.sleep(2)  # wrk is connected and the pools are warm before the first reload
        started = time.monotonic()
        for profile in reloads:
            session.reload(profile)
        took = time.monotonic() - started
        load.join()
        if took > seconds - 3:
            print(f"  warning: the reloads took {took:.1f} s of a {seconds} s load", file=sys.stderr)
        return out[0], took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=40)
    parser.add_argument("--case", action="append", help="only the cases whose name contains this")
    args = parser.parse_args()
    offset = free_port_offset((8000, 8080))
    for name, (base, path, reloads) in cases(offset).items():
        if args.case and not any(c in name for c in args.case):
            continue
        rows = []
        for _ in range(args.reps):
            r, took = run_case(base, path, reloads, args.seconds)
            sockets = r.errors["connect"] + r.errors["reset"] + r.errors["timeout"]
            rows.append((r.responses or 0, r.errors["http_error"], sockets, r.latency_p99_ms, r.latency_max_ms, took))
            print(f"{name}: {r.responses} requests, {len(reloads)} reloads in {took:.1f} s, "
                  f"non-2xx {r.errors['http_error']}, socket errors {sockets}, p99 {r.latency_p99_ms:.1f} ms, "
                  f"max {r.latency_max_ms:.0f} ms", flush=True)
        med = [statistics.median(col) for col in zip(*rows, strict=True)]
        print(f"{name}: median of {args.reps}: {med[0]:.0f} requests, non-2xx total {sum(r[1] for r in rows)}, "
              f"socket errors total {sum(r[2] for r in rows)}, p99 {med[3]:.1f} ms, max {med[4]:.0f} ms, "
              f"reloads took {med[5]:.1f} s", flush=True)


if __name__ == "__main__":
    main()
