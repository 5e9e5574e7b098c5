"""`stackpanel up --traces FILE` writes one JSON object per completed trace while the stack runs;
`stackpanel trace --otlp FILE` exports the run's requests (or one id) as OTLP/JSON afterwards."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stackpanel.cli import main
from stackpanel.core.metrics.otlp import trace_id
from tests.integration.conftest import free_offset, send_tagged
from tests.integration.test_headless_failure import Output

pytestmark = pytest.mark.integration


def wait_for_lines(path: Path, predicate, timeout: float = 20.0) -> list[dict]:
    """The file's JSON lines once ``predicate`` holds for them (checked as the file grows)."""
    deadline = time.monotonic() + timeout
    while True:
        docs = [json.loads(ln) for ln in path.read_text().splitlines()] if path.exists() else []
        if predicate(docs):
            return docs
        assert time.monotonic() < deadline, docs
        time.sleep(0.1)  # polling the file's growth; the condition is what ends the wait


def test_up_writes_traces_and_trace_exports_otlp(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from stackpanel.core.profiles.library import builtin_dir
    from stackpanel.core.profiles.loader import load_profile

    offset = free_offset()
    profile = load_profile(builtin_dir() / "nginx-gunicorn-flask.yaml", port_offset=offset)
    traces = tmp_path / "traces.jsonl"
    run = tmp_path / "run"
    argv = [sys.executable, "-m", "stackpanel", "up", "nginx-gunicorn-flask", "--port-offset", str(offset),
            "--run-dir", str(run), "--traces", str(traces)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = Output(proc)
    ids = [f"cli-{i}-{time.time_ns()}" for i in range(3)]
    try:
        out.wait_for("is up: open")
        send_tagged(profile, "api/wait?ms=10", ids)
        docs = wait_for_lines(traces, lambda d: set(ids) <= {x["request_id"] for x in d})
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    mine = [d for d in docs if d["request_id"] in ids]
    assert len(mine) == len(ids)  # one object per trace
    for d in mine:
        assert d["path"] == "/api/wait" and d["status"] == 200 and d["method"] == "GET" and not d["failed"]
        assert [s["node"] for s in d["spans"]] == ["web", "app"] and d["missing"] == []
        # own time: the edge's duration minus the app's (clamped at 0: gunicorn's clock runs past nginx's ms)
        own = max(0.0, d["spans"][0]["duration"] - d["spans"][1]["duration"])
        assert d["spans"][0]["own"] == pytest.approx(own, abs=1e-9)
        assert d["spans"][1]["duration"] >= 0.009 and d["spans"][1]["hop"] is None

    otlp = tmp_path / "all.otlp.json"
    assert main(["trace", "--otlp", str(otlp), "--run-dir", str(run)]) == 0
    doc = json.loads(otlp.read_text())
    spans = [s for rs in doc["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]
    for rid in ids:
        assert len([s for s in spans if s["traceId"] == trace_id(rid)]) == 2  # web and app
    assert main(["trace", ids[0], "--otlp", str(tmp_path / "one.json"), "--run-dir", str(run)]) == 0
    one = json.loads((tmp_path / "one.json").read_text())
    assert {s["traceId"] for rs in one["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]} == {
        trace_id(ids[0])}
    assert main(["trace", "--run-dir", str(run)]) == 2  # neither an id nor --otlp
    assert "wrote 1 trace(s)" in capsys.readouterr().out
