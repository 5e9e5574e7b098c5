"""Truth of the live traces (#15), through every built-in profile with a proxy in front: requests with
known ids (X-Request-ID set by the client), some failing (the demo app's /status?code=500) and one
much slower than the rest. Every id appears once on every tier of its path and nowhere else; the
live collector's traces follow that path with durations that nest (within the logs' resolution and
the few ms a tier spends after its response, as in test_traces.py); and the kept set holds the
slowest request and every failed one. The HTTPS profile is sent its requests over https with the
local CA (its plain port only redirects)."""
from __future__ import annotations

import ssl
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from stackpanel.core.metrics.tracing import Trace, TraceQuery
from stackpanel.core.profiles.library import builtin_dir
from stackpanel.core.profiles.schema import Profile, ProxyNode
from stackpanel.core.session import StackSession
from stackpanel.core.tls import ca_dir
from tests.integration.conftest import builtin
from tests.integration.test_traces import LOG_DELAY, RESOLUTION

pytestmark = pytest.mark.integration

PROXIED = sorted(p.stem for p in builtin_dir().glob("*.yaml")
                 if isinstance((prof := builtin(p.stem, offset=0)).nodes[prof.entry], ProxyNode))
N = 12
FAILING = {3, 7, 10}  # /api/status?code=500
SLOW = 5  # /api/wait?ms=150, the others wait 5 ms


def path_of(profile: Profile, url_path: str) -> list[frozenset[str]]:
    """The tiers a request for ``url_path`` goes through, from the profile's routes (longest prefix):
    each tier the nodes it may be (several where a route balances over backends)."""
    tiers, names = [], frozenset({profile.entry})
    while names:
        tiers.append(names)
        node = profile.nodes[next(iter(names))]  # the backends of one route are alike
        if not isinstance(node, ProxyNode):
            break
        matching = [r for r in node.routes if url_path == r.path or url_path.startswith(r.path.rstrip("/") + "/")]
        names = frozenset(max(matching, key=lambda r: len(r.path)).backends) if matching else frozenset()
    return tiers


def send(url: str, rid: str, context: ssl.SSLContext | None) -> int:
    req = urllib.request.Request(url, headers={"X-Request-ID": rid})
    try:
        with urllib.request.urlopen(req, timeout=10, context=context) as response:
            assert response.headers["X-Request-ID"] == rid
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as err:
        with err:
            assert err.headers["X-Request-ID"] == rid
            err.read()
            return int(err.code)


def test_every_proxied_profile_is_covered() -> None:
    assert {"nginx-uvicorn", "nginx-apache-uvicorn", "nginx-gunicorn-flask", "apache-uvicorn",
            "nginx-tls-uvicorn", "nginx-split"} <= set(PROXIED)


@pytest.mark.parametrize("name", PROXIED)
def test_traces_tell_the_truth(name: str, tmp_path: Path) -> None:
    profile = builtin(name)
    session = StackSession(profile, run_dir=tmp_path / "run")
    got: dict[str, Trace] = {}
    cond = threading.Condition()

    def on_trace(trace: Trace) -> None:
        with cond:
            got[trace.request_id] = trace
            cond.notify_all()

    session.subscribe_traces(on_trace)
    ids = [f"truth-{name}-{i}-{time.time_ns()}" for i in range(N)]
    failed = {ids[i] for i in FAILING}
    slow = ids[SLOW]
    try:
        session.start()
        base = profile.browser_url
        context = ssl.create_default_context(cafile=str(ca_dir() / "ca.pem")) if base.startswith("https") else None
        for rid in ids:
            target = "api/status?code=500" if rid in failed else f"api/wait?ms={150 if rid == slow else 5}"
            assert send(base + target, rid, context) == (500 if rid in failed else 200)
        with cond:  # the failed ones and the slowest are always kept (nginx flushes its log once a second)
            assert cond.wait_for(lambda: failed | {slow} <= got.keys(), timeout=20), sorted(got)
        kept = {t.request_id: t for t in session.traces()}
    finally:
        session.close()
    path = path_of(profile, "/api/wait")
    assert len(path) >= 2, path

    # 1. every id once on every tier of its path, on no other tier (the logs are the ground truth)
    logs = session.stack.paths.logs_dir
    seen: dict[str, list[str]] = {}
    for node in profile.nodes:
        fields = [line.split(" ", 5) for line in (logs / f"{node}.access.log").read_text().splitlines()]
        seen[node] = [f[4] for f in fields if len(f) > 4]
    for rid in ids:
        for tier in path:  # once on one node of each tier of its path ...
            assert sum(seen[node].count(rid) for node in tier) == 1, (tier, rid)
        for node in set(profile.nodes) - set().union(*path):  # ... and on no other node
            assert seen[node].count(rid) == 0, (node, rid)

    # 2. the live traces follow that path, nest, and carry each tier's status
    assert len(set(got) & set(ids)) >= len(failed) + 1
    for rid, trace in got.items():
        if rid not in ids:
            continue
        assert len(trace.nodes) == len(path) and not trace.missing, trace.format()
        assert all(node in tier for node, tier in zip(trace.nodes, path, strict=True)), trace.format()
        assert all(s.status == (500 if rid in failed else 200) for s in trace.spans), trace.format()
        for outer, inner in zip(trace.spans, trace.spans[1:], strict=False):
            assert inner.start >= outer.start - RESOLUTION, trace.format()
            assert inner.duration <= outer.duration + LOG_DELAY, trace.format()  # durations nest
            assert inner.end <= outer.end + LOG_DELAY, trace.format()
        waited = 0.0 if rid in failed else 0.14 if rid == slow else 0.004
        assert trace.spans[-1].pid > 0 and trace.spans[-1].duration >= waited, trace.format()

    # 3. the kept set: every failed request, and the slowest on top of the slowest
    assert failed <= kept.keys() and slow in kept
    assert {t.request_id for t in session.traces(TraceQuery(status="failed"))} >= failed
    mine = [t for t in kept.values() if t.request_id in ids]
    assert max(mine, key=lambda t: t.duration).request_id == slow
