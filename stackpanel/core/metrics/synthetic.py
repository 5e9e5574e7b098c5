"""Synthetic access-log lines, exactly as each tier writes them (see :mod:`stackpanel.core.logformat`).

Used by the tests and ``benchmarks/bench_ingest.py``; handy for demoing the GUI without servers.
"""
from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Literal

Tier = Literal["nginx", "apache", "gunicorn", "uvicorn"]
TIERS: tuple[Tier, ...] = ("nginx", "apache", "gunicorn", "uvicorn")

_PATHS = ("/", "/api/items", "/api/items/42", "/static/app.css", "/healthz", "/api/search")
_QUERIES = ("", "", "id=7", "q=hello&page=2")
_METHODS = ("GET", "GET", "GET", "POST")


def access_line(
    tier: Tier,
    pid: int,
    status: int,
    seconds: float,
    route: str,
    request_id: str = "-",
    method: str = "GET",
    path: str = "/",
    query: str = "",
) -> str:
    """One line (without newline) as ``tier`` renders it with the formats in ``logformat``."""
    if tier == "nginx":  # $pid $status $request_time $sp_route $sp_request_id $request_method "$request_uri"
        uri = f"{path}?{query}" if query else path
        return f'{pid} {status} {seconds:.3f} {route} {request_id} {method} "{uri}"'
    if tier == "apache":  # %P %>s %Dus %{SP_ROUTE}e %{X-Request-ID}i %m "%U%q"
        q = f"?{query}" if query else ""
        return f'{pid} {status} {round(seconds * 1e6)}us {route} {request_id} {method} "{path}{q}"'
    if tier == "gunicorn":  # %(process)d + %(s)s %(L)s - %({x-request-id}i)s %(m)s "%(U)s%(q)s"
        return f'{pid} {status} {seconds:.6f} - {request_id} {method} "{path}{query}"'
    if tier == "uvicorn":  # %(process)d %(status_code).3s - - - %(request_line)s
        uri = f"{path}?{query}" if query else path
        return f"{pid} {status} - - - {method} {uri} HTTP/1.1"
    raise ValueError(f"unknown tier {tier!r}")


def random_lines(
    n: int,
    *,
    pids: dict[Tier, tuple[int, ...]],
    routes: dict[Tier, tuple[str, ...]] | None = None,
    seed: int = 0,
    error_rate: float = 0.01,
) -> Iterator[tuple[Tier, int, int, str, str]]:
    """``n`` random ``(tier, pid, status, route, line)`` tuples; tiers chosen uniformly from ``pids``."""
    rng = random.Random(seed)
    tiers = tuple(pids)
    default_routes: dict[Tier, tuple[str, ...]] = {
        "nginx": ("apache", "static"),
        "apache": ("gunicorn",),
        "gunicorn": ("-",),
        "uvicorn": ("-",),
    }
    routes = routes or default_routes
    for _ in range(n):
        tier = rng.choice(tiers)
        pid = rng.choice(pids[tier])
        r = rng.random()
        status = 502 if r < error_rate else (404 if r < 2 * error_rate else (304 if r < 0.1 else 200))
        route = "-" if tier in ("gunicorn", "uvicorn") else rng.choice(routes[tier])
        rid = f"{rng.getrandbits(128):032x}" if tier != "uvicorn" else "-"
        line = access_line(
            tier, pid, status, rng.expovariate(200.0), route, rid,
            rng.choice(_METHODS), rng.choice(_PATHS), rng.choice(_QUERIES),
        )
        yield tier, pid, status, route, line


def trace_lines(request_id: str, tiers: list[tuple[str, Tier, int, str]], *, start: float, duration: float,
                status: int = 200, path: str = "/api/hello", method: str = "GET",
                hop: float = 0.0005) -> list[tuple[str, str]]:
    """One request through ``tiers`` (node, tier, pid, route), outermost first, as ``(node, line)``
    with the finish time every tier logs: each tier starts ``hop`` after the one in front of it and
    ends ``hop`` before it (durations nest); ``status`` at every tier."""
    out = []
    for i, (node, tier, pid, route) in enumerate(tiers):
        begin, end = start + i * hop, start + duration - i * hop
        seconds = max(0.0, end - begin)
        if tier == "nginx":
            head = f"{pid} {status} {seconds:.3f} {route}"
        elif tier == "apache":
            head = f"{pid} {status} {round(seconds * 1e6)}us {route}"
        else:  # gunicorn, and uvicorn through stackpanel's access wrapper
            head = f"{pid} {status} {seconds:.6f} -"
        out.append((node, f'{head} {request_id} {method} "{path}" {end:.6f}'))
    return out
