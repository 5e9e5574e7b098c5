"""`stackpanel trace ID`: one request through every tier from the access logs: the id appears once
on every tier of its path, the tiers nest (each starts no earlier and ends no later than the one in
front of it, within the logs' resolution and the few ms a tier spends after its response), and the
CLI prints the waterfall."""
from __future__ import annotations

from pathlib import Path

import pytest

from stackpanel.cli import main
from stackpanel.core.session import StackSession
from stackpanel.core.traces import find_trace
from tests.integration.conftest import builtin, send_tagged

pytestmark = pytest.mark.integration

RESOLUTION = 0.0015  # nginx logs milliseconds (its $msec and $request_time)
#: A tier stops its clock when it is done with the request, after the response went out (Apache
#: and gunicorn's sync worker close and log first): its span runs 1-3 ms past the proxy's here, more
#: when the box is busy (bounded at 25 ms, under the 30 ms the app waits). It never starts before
#: the tier in front of it.
LOG_DELAY = 0.025


@pytest.mark.parametrize(("name", "path"), [("nginx-apache-uvicorn", ["edge", "web", "app"]),
                                            ("nginx-gunicorn-flask", ["web", "app"])])
def test_one_request_id_through_every_tier(name: str, path: list[str], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    profile = builtin(name)
    session = StackSession(profile, run_dir=tmp_path / "run")
    try:
        session.start()
        ids = [f"trace-{name}-{i}" for i in range(5)]
        send_tagged(profile, "api/wait?ms=30", ids)
    finally:
        session.close()  # stopping flushes nginx's buffered access log
    logs = session.stack.paths.logs_dir
    for rid in ids:
        trace = find_trace(rid, [logs])
        assert [s.node for s in trace.spans] == path, trace.format()
        for outer, inner in zip(trace.spans, trace.spans[1:], strict=False):
            assert inner.start >= outer.start - RESOLUTION and inner.end <= outer.end + LOG_DELAY, trace.format()
            assert inner.duration <= outer.duration + LOG_DELAY, trace.format()  # durations nest
        assert trace.spans[-1].duration >= 0.025  # the app waited 30 ms
        assert all(s.status == 200 for s in trace.spans)
    assert main(["trace", ids[0], "--run-dir", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert f"request {ids[0]}:" in out and all(node in out for node in path) and "own ms" in out
    assert main(["trace", "no-such-id", "--run-dir", str(tmp_path / "run")]) == 1
