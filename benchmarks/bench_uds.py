"""Unix socket vs loopback TCP between nginx and uvicorn, measured with wrk.

    .venv/bin/python benchmarks/bench_uds.py [--pairs 7] [--duration 3] [--connections 32] [--workers 2]
                                            [--profile nginx-uvicorn] [--path /api/hello] [--json FILE]

Both stacks (the profile with its app node on `listen: tcp`, and the same on `listen: unix`) run at
once on their own ports; each pair loads one then the other for `--duration` seconds with wrk, in
an order that alternates pair by pair, so slow phases of the shared machine hit both. Reported: the
median req/s of each, and the median of the per-pair ratios unix / tcp (with min–max).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from stackpanel.core.bench import machine_info
from stackpanel.core.loadgen import wrk_available
from stackpanel.core.loadgen.wrk import run_wrk
from stackpanel.core.profiles.library import builtin_dir
from stackpanel.core.profiles.loader import load_profile_text
from stackpanel.core.profiles.schema import AppServerNode, Profile
from stackpanel.core.session import StackSession
from stackpanel.core.supervise.ports import free_port_offset


def variant(name: str, listen: str, workers: int, avoid: int = 0) -> Profile:
    data = yaml.safe_load((builtin_dir() / f"{name}.yaml").read_text(encoding="utf-8"))
    for node in data["nodes"].values():
        if node["kind"] in ("uvicorn", "gunicorn"):
            node["listen"] = listen
            node["workers"] = workers
    base = load_profile_text(yaml.safe_dump(data), builtin_dir() / f"{name}.yaml")
    ports = [n.port for n in base.nodes.values()]
    offset = free_port_offset(ports)
    while offset == avoid:
        offset = free_port_offset(ports)
    return base.with_port_offset(offset)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=7)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--profile", default="nginx-uvicorn")
    ap.add_argument("--path", default="/api/hello")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if not wrk_available():
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    tcp = variant(args.profile, "tcp", args.workers)
    unix = variant(args.profile, "unix", args.workers, avoid=tcp.port_offset)
    # outside /tmp/pytest-*: as root, nginx's workers (nobody) must reach the socket
    root = Path(tempfile.mkdtemp(prefix="sp-uds-"))
    sessions = {"tcp": StackSession(tcp, run_dir=root / "tcp"), "unix": StackSession(unix, run_dir=root / "unix")}
    rates: dict[str, list[float]] = {"tcp": [], "unix": []}
    ratios: list[float] = []
    try:
        for session in sessions.values():
            session.start()
        app = next(n for n, node in unix.nodes.items() if isinstance(node, AppServerNode))
        assert sessions["unix"].stack.nodes[app].unix_socket is not None
        assert sessions["tcp"].stack.nodes[app].unix_socket is None
        for session in sessions.values():  # warm-up
            run_wrk(session.profile.entry_url + args.path.lstrip("/"), connections=args.connections, duration_s=1)
        for i in range(args.pairs):
            order = ("tcp", "unix") if i % 2 == 0 else ("unix", "tcp")
            pair: dict[str, float] = {}
            for mode in order:
                url = sessions[mode].profile.entry_url + args.path.lstrip("/")
                result = run_wrk(url, connections=args.connections, duration_s=args.duration)
                if result.errors_total:
                    print(f"  {mode}: {result.errors_total} errors {result.errors}", file=sys.stderr)
                pair[mode] = result.rps
                rates[mode].append(result.rps)
            ratios.append(pair["unix"] / pair["tcp"] if pair["tcp"] else float("nan"))
            print(f"pair {i + 1}: tcp {pair['tcp']:8.0f}  unix {pair['unix']:8.0f}  ratio {ratios[-1]:.3f}",
                  flush=True)
    finally:
        for session in sessions.values():
            session.close()
        shutil.rmtree(root, ignore_errors=True)
    summary: dict[str, Any] = {
        "profile": args.profile, "workers": args.workers, "connections": args.connections,
        "duration_s": args.duration, "pairs": args.pairs, "tcp_rps_median": statistics.median(rates["tcp"]),
        "unix_rps_median": statistics.median(rates["unix"]), "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios), "ratio_max": max(ratios), "load_average": os.getloadavg(),
        "machine": machine_info(),
    }
    print(f"median req/s: tcp {summary['tcp_rps_median']:.0f}, unix {summary['unix_rps_median']:.0f}; "
          f"unix/tcp {summary['ratio_median']:.3f} ({summary['ratio_min']:.3f}–{summary['ratio_max']:.3f}); "
          f"load average after {summary['load_average'][0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
