"""stackpanel bench with real stacks: counts add up, nothing is left running, the files are valid."""
from __future__ import annotations

import csv
import io
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from stackpanel.core.bench import compare_profiles
from stackpanel.core.loadgen import wrk_available

from .conftest import port_free

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def stack_processes(marker: str = "stackpanel-bench-") -> list[psutil.Process]:
    """Server processes started from a comparison's run dirs (their command lines name the run dir),
    and any server process still below this test process."""
    found = {}
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(marker in part for part in p.info["cmdline"] or ()):
                found[p.pid] = p
        except psutil.Error:
            pass
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE and any(
                    s in " ".join(p.cmdline()) for s in ("nginx", "uvicorn", "gunicorn", "apache2")):
                found[p.pid] = p
        except psutil.Error:
            pass
    return list(found.values())


def test_counts_add_up_and_nothing_is_left(tmp_path: Path) -> None:
    """A request-count run: the entry node logged exactly what the generator saw answered."""
    before = {p.pid for p in stack_processes()}
    events = []
    c = compare_profiles(["uvicorn-workers", "nginx-uvicorn"], connections=16, requests=3000, duration_s=30,
                         warmup_s=0.5, workers=2, path="/api/hello", progress=events.append,
                         run_dir=tmp_path / "stackpanel-bench-test")
    assert c.all_ran, c.format_table()
    for r in c.runs:
        assert r.ok and r.clean_stop, (r.name, r.reason, r.stop_problem)
        assert r.client_requests == r.requests_ok + r.error_responses == 3000
        entry = r.workers_of(r.entry_node)
        assert sum(w.requests for w in entry) == r.server_requests == r.client_requests, r.name
        # every tier saw every request; both app workers are reported (the kernel decides which
        # of them accepts nginx's pooled connections, so one may serve them all)
        assert all(n == 3000 for n in r.node_requests.values()), r.node_requests
        app = [w for w in r.workers_of("app") if w.role == "worker"]
        assert len(app) == 2 and sum(w.requests for w in app) == 3000, app
        assert r.app_workers == 2
        assert all(w.cpu_percent is not None for w in r.workers if w.role != "gone")
        assert sum(w.cpu_percent or 0 for w in app) > 5  # the workers really worked
        assert r.throughput_rps > 0 and 0 < r.latency_p50_ms <= r.latency_p99_ms
        assert r.generator_cpu_percent > 0
    assert c.ratios["uvicorn-workers"] == 1.0 and c.ratios["nginx-uvicorn"] > 0
    assert [r.entry_node for r in c.runs] == ["app", "web"]
    phases = [e.phase for e in events]
    assert phases.count("done") == 2 and "warmup" in phases and "stop" in phases
    # nothing is left running, no port is held, and each profile ran on shifted ports
    assert not [p for p in stack_processes() if p.pid not in before]
    assert all(r.port_offset > 0 for r in c.runs)
    ports = {"uvicorn-workers": [8000], "nginx-uvicorn": [8000, 8080]}
    assert all(port_free(p + r.port_offset) for r in c.runs for p in ports[r.name])


def test_cli_bench_writes_table_json_csv_png(tmp_path: Path) -> None:
    """The CLI in duration mode (wrk when installed), with a profile that cannot run: exit 1, files written."""
    out = {ext: tmp_path / f"bench.{ext}" for ext in ("json", "csv", "png")}
    argv = [sys.executable, "-m", "stackpanel", "bench", "uvicorn-workers", "no-such-profile",
            "--connections", "8", "--duration", "2", "--warmup", "0.5", "--workers", "2",
            "--json", str(out["json"]), "--csv", str(out["csv"]), "--png", str(out["png"])]
    if wrk_available():
        argv.append("--wrk")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # one profile did not run
    assert "1 of 2 profile(s) did not run: no-such-profile" in proc.stderr
    assert "[1/2] uvicorn-workers: starting" in proc.stdout and "[2/2] no-such-profile" in proc.stdout
    table = proc.stdout[proc.stdout.index("\nload: "):]
    row = next(line for line in table.splitlines() if line.startswith("uvicorn-workers "))
    assert row.split()[2] == "1.00"
    assert any(line.split() == ["no-such-profile", "FAILED"] for line in table.splitlines())

    data = json.loads(out["json"].read_text())
    ran, missing = data["runs"]
    assert ran["ok"] and ran["ratio"] == 1.0 and ran["clean_stop"]
    assert ran["generator"] == ("wrk" if wrk_available() else "builtin")
    assert not missing["ok"] and "no such profile" in missing["reason"]
    # duration mode: in-flight requests at the deadline are served but not counted by the generator
    assert 0 <= ran["server_minus_client"] <= 8
    rows = list(csv.DictReader(io.StringIO(out["csv"].read_text())))
    assert [r["profile"] for r in rows] == ["uvicorn-workers", "no-such-profile"]
    assert float(rows[0]["requests_per_s"]) == pytest.approx(ran["throughput_rps"], rel=1e-3)

    png = out["png"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
    assert struct.unpack(">II", png[16:24]) == (1600, 900)
    assert 20_000 < len(png) < 2_000_000


@pytest.mark.skipif(not wrk_available(), reason="wrk is not installed (apt-get install wrk)")
def test_proxy_targets_are_measured_in_alternating_ab_pairs_with_wrk() -> None:
    from stackpanel.core.bench.targets import Target, run_targets

    report = run_targets(pairs=2, duration_s=1.0, warmup_s=0.2, connections=16,
                         targets=(Target("nginx-uvicorn", 0.85),))
    (result,) = report.results
    assert [p.baseline_first for p in result.pairs] == [True, False]
    assert all(not p.problem and p.baseline_rps > 0 and p.proxied_rps > 0 for p in result.pairs), result.pairs
    assert len(result.ratios) == 2 and result.met is not None
    assert all(p.cpu_ratio > 0 for p in result.pairs), result.pairs  # CPU-µs per request on both sides
    assert "nginx-uvicorn" in report.format_table() and report.settings["workers"] == 2
    assert stack_processes() == []
