"""Time to first byte of a streamed response: through nginx and Apache (buffering on and off) vs
direct to uvicorn, measured side by side.

    .venv/bin/python benchmarks/bench_ttfb.py [--requests 300] [--rounds 5]

Two stacks, nginx → uvicorn and Apache → uvicorn (1 worker each), each proxy with a buffered /api
route and an unbuffered /raw route (strip_prefix). Each round measures every path in turn (A/B interleaved, so
machine noise hits all alike) with sequential requests on fresh connections: time from sending
the request to the first byte of the first server-sent event, and to the end of a 3-event stream
with 50 ms between events. Medians over all rounds; the ratio is proxied / direct.
"""
from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stackpanel.core.machine import describe_machine
from stackpanel.core.profiles.loader import load_profile_text
from stackpanel.core.session import StackSession
from tests.conftest import free_ports


def first_byte_and_end(port: int, target: str) -> tuple[float, float]:
    start = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n".encode())
        first = None
        data = b""
        while chunk := s.recv(65536):
            data += chunk
            if first is None and b"data: " in data:
                first = time.perf_counter()
    assert first is not None and data.startswith(b"HTTP/1.1 200"), data[:200]
    return first - start, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="requests per path per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    nginx, apache, app, app2 = free_ports(4)
    # One profile has one entry: the two proxies run as two stacks, each with its own uvicorn.
    profiles = {proxy: f"""\
version: 1
name: ttfb {proxy}
nodes:
  edge:
    kind: {proxy}
    port: {port}
    routes: [{{path: /api, to: app}}, {{path: /raw, to: app, strip_prefix: true, buffering: false}}]
  app:
    kind: uvicorn
    port: {backend}
    app: {{module: stackpanel.apps.fastapi_demo:app}}
""" for proxy, port, backend in (("nginx", nginx, app), ("apache", apache, app2))}
    stream = "events?n=3&ms=50"
    paths = {
        "direct uvicorn": (app, f"/{stream}"),
        "nginx /api (buffering on)": (nginx, f"/api/{stream}"),
        "nginx /raw (buffering off)": (nginx, f"/raw/{stream}"),
        "apache /api": (apache, f"/api/{stream}"),
        "apache /raw (flushpackets on)": (apache, f"/raw/{stream}"),
    }
    with tempfile.TemporaryDirectory() as tmp:
        sessions = []
        try:
            for proxy, text in profiles.items():
                session = StackSession(load_profile_text(text, Path(tmp) / f"{proxy}.yaml"), run_dir=Path(tmp) / proxy)
                sessions.append(session)
                session.start()
            first: dict[str, list[float]] = {k: [] for k in paths}
            end: dict[str, list[float]] = {k: [] for k in paths}
            for _ in range(args.rounds):
                for name, (port, target) in paths.items():
                    for _ in range(args.requests):
                        f, e = first_byte_and_end(port, target)
                        first[name].append(f * 1000)
                        end[name].append(e * 1000)
        finally:
            for session in sessions:
                session.close()
    base = statistics.median(first["direct uvicorn"])
    print(describe_machine())
    print(f"{args.rounds} rounds x {args.requests} requests per path, fresh connection each; medians")
    print(f"{'path':<30} {'first event ms':>15} {'ratio':>7} {'3 events ms':>12}")
    for name in paths:
        f = statistics.median(first[name])
        print(f"{name:<30} {f:>15.3f} {f / base:>7.2f} {statistics.median(end[name]):>12.1f}")


if __name__ == "__main__":
    main()
