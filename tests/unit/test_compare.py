"""Comparison report: ratio math, table, CSV, JSON and chart on constructed values (no servers)."""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from stackpanel.core.bench import (
    CompareError,
    CompareSettings,
    Comparison,
    ProfileRun,
    WorkerShare,
    compare_profiles,
    free_port_offset,
    with_app_workers,
)
from stackpanel.core.profiles.library import builtin_dir
from stackpanel.core.profiles.loader import load_profile

SETTINGS = CompareSettings(connections=64, duration_s=10.0, path="/api/hello", warmup_s=2.0, generator="builtin",
                           workers=4)
MACHINE = {"nproc": 2, "cpu_model": "Test CPU", "python": "3.11.7", "system": "Linux 6"}


def run(name: str, rps: float, **kw) -> ProfileRun:
    defaults = dict(title=name.title(), ok=True, throughput_rps=rps, latency_p50_ms=1.5, latency_p90_ms=3.25,
                    latency_p99_ms=12.0, latency_max_ms=40.0, requests_ok=int(rps * 10), responses=int(rps * 10),
                    errors={"http_5xx": 0, "reset": 0}, duration_s=10.0, generator_cpu_percent=55.0,
                    app_workers=4)
    defaults.update(kw)
    return ProfileRun(name=name, **defaults)


def comparison(*runs: ProfileRun) -> Comparison:
    return Comparison(settings=SETTINGS, runs=runs, machine=MACHINE, started_at=1_700_000_000.0)


def failed(name: str, reason: str = "port 8000 on 127.0.0.1 is taken by pid 1\n    fix: stop it") -> ProfileRun:
    return ProfileRun(name=name, reason=reason)


# -- ratio math --------------------------------------------------------------------------------------


def test_ratios_are_relative_to_the_first_profile() -> None:
    c = comparison(run("direct", 10_000), run("nginx", 7_500), run("apache", 2_500), run("faster", 12_000))
    assert c.baseline is c.runs[0]
    assert c.ratios == {"direct": 1.0, "nginx": 0.75, "apache": 0.25, "faster": 1.2}
    assert c.all_ran and c.failed == ()


def test_a_failed_first_profile_passes_the_baseline_on_and_has_no_ratio() -> None:
    c = comparison(failed("broken"), run("direct", 8_000), run("nginx", 6_000))
    assert c.baseline is not None and c.baseline.name == "direct"
    assert c.ratios == {"broken": None, "direct": 1.0, "nginx": 0.75}
    assert not c.all_ran and [r.name for r in c.failed] == ["broken"]


def test_no_profile_ran_means_no_ratios() -> None:
    c = comparison(failed("a"), failed("b"))
    assert c.baseline is None and c.ratios == {"a": None, "b": None}
    assert not c.all_ran
    assert not comparison().all_ran  # an empty comparison did not "all run"


def test_client_and_server_counts() -> None:
    r = run("x", 100, requests_ok=990, errors={"http_5xx": 7, "http_4xx": 2, "reset": 5, "timeout": 1},
            server_requests=1003)
    assert r.error_responses == 9  # 4xx + 5xx: the server answered these
    assert r.client_requests == 999
    assert r.errors_total == 15
    assert r.server_minus_client == 4


# -- table -------------------------------------------------------------------------------------------


def test_table_is_aligned_side_by_side_with_ratio_column() -> None:
    workers = (WorkerShare("app", 10, "master", 0, 0.5), WorkerShare("app", 11, "worker", 60_000, 48.0),
               WorkerShare("app", 12, "worker", 40_000, 47.5))
    c = comparison(run("uvicorn-workers", 10_000, workers=workers, node_requests={"app": 100_000},
                       node_cpu_percent={"app": 96.0}),
                   run("nginx-uvicorn", 7_300, errors={"http_5xx": 3}),
                   failed("apache-uvicorn"))
    text = c.format_table()
    lines = text.splitlines()
    assert lines[0] == ("load: 64 connections, 10 s after 2 s warm-up, GET /api/hello, builtin generator, "
                        "4 app workers each")
    assert lines[1] == "machine: 2 × Test CPU, Python 3.11.7, Linux 6"
    header = next(i for i, line in enumerate(lines) if line.startswith("profile"))
    rows = lines[header + 2: header + 5]
    assert lines[header + 1].startswith("---")
    assert rows[0].split()[:3] == ["uvicorn-workers", "10,000", "1.00"]
    assert rows[1].split()[:3] == ["nginx-uvicorn", "7,300", "0.73"]
    assert rows[2].split() == ["apache-uvicorn", "FAILED"]
    # right-aligned numbers: every row's req/s and ratio end in the same column as the header's
    for col in ("req/s", "ratio", "p99 ms", "gen CPU"):
        end = lines[header].index(col) + len(col)
        assert all(row[end - 1] != " " and (len(row) == end or row[end] == " ") for row in rows[:2]), col
    assert "nginx-uvicorn: errors: http_5xx 3" in text
    # the reason is on one line, next to the profile's name
    assert "apache-uvicorn: did not run: port 8000 on 127.0.0.1 is taken by pid 1 | fix: stop it" in text
    # per-worker detail: requests and CPU per process, master first
    detail = next(line for line in lines if line.strip().startswith("app ") and "master" in line)
    assert "100,000 req" in detail and "master 10: 0 (0%)" in detail
    assert detail.index("11: 60,000 (48%)") < detail.index("12: 40,000 (48%)")
    assert "ratio = req/s / uvicorn-workers's" in text
    assert "per process" in text and "per process" not in c.format_table(workers=False)


def test_table_marks_a_dirty_stop() -> None:
    c = comparison(run("a", 10, clean_stop=False, stop_problem="processes still alive: 123"))
    assert "a: not stopped cleanly: processes still alive: 123" in c.format_table()


# -- CSV and JSON ------------------------------------------------------------------------------------


def test_csv_has_one_parseable_row_per_profile() -> None:
    workers = (WorkerShare("web", 5, "worker", 300, 20.0), WorkerShare("app", 6, "worker", 300, None))
    c = comparison(run("direct", 1000), run("proxied", 500, workers=workers, server_requests=5003,
                                                requests_ok=5000),
                   failed("broken", "line one\nline two"))
    rows = list(csv.DictReader(io.StringIO(c.to_csv())))
    assert [r["profile"] for r in rows] == ["direct", "proxied", "broken"]
    assert tuple(rows[0]) == Comparison.CSV_FIELDS
    assert float(rows[0]["ratio"]) == 1.0 and float(rows[1]["ratio"]) == 0.5 and rows[2]["ratio"] == ""
    assert float(rows[1]["requests_per_s"]) == 500.0
    assert rows[1]["workers"] == "web:5=300@20.0;app:6=300@"
    assert rows[1]["server_minus_client"] == "3"
    assert rows[2]["ok"] == "0" and rows[2]["reason"] == "line one | line two"
    assert rows[2]["requests_per_s"] == "" and rows[2]["latency_p99_ms"] == ""
    assert rows[0]["connections"] == "64" and rows[0]["path"] == "/api/hello"


def test_json_is_strict_and_complete() -> None:
    c = comparison(failed("broken"), run("direct", 1000, latency_p99_ms=math.nan), run("proxied", 250))
    data = json.loads(c.to_json())  # to_json uses allow_nan=False: NaN became null
    assert data["baseline"] == "direct" and data["all_ran"] is False
    assert data["settings"] == {"connections": 64, "duration_s": 10.0, "path": "/api/hello", "warmup_s": 2.0,
                                "generator": "builtin", "requests": None, "workers": 4, "port_offset": None}
    assert data["machine"]["nproc"] == 2
    by_name = {r["name"]: r for r in data["runs"]}
    assert by_name["broken"]["ratio"] is None and by_name["broken"]["throughput_rps"] is None
    assert by_name["direct"]["ratio"] == 1.0 and by_name["direct"]["latency_p99_ms"] is None
    assert by_name["proxied"]["ratio"] == 0.25
    assert by_name["proxied"]["client_requests"] == 2500


# -- helpers -----------------------------------------------------------------------------------------


def test_with_app_workers_changes_only_app_servers() -> None:
    profile = load_profile(builtin_dir() / "nginx-apache-uvicorn.yaml")
    four = with_app_workers(profile, 4)
    assert four.nodes["app"].workers == 4
    assert four.nodes["edge"].workers == profile.nodes["edge"].workers
    assert four.nodes["web"].workers == profile.nodes["web"].workers
    assert profile.nodes["app"].workers == 2  # the original is untouched
    gunicorn = with_app_workers(load_profile(builtin_dir() / "nginx-gunicorn-flask.yaml"), 3)
    assert gunicorn.nodes["app"].workers == 3
    dev = with_app_workers(load_profile(builtin_dir() / "uvicorn-dev.yaml"), 4)
    assert dev.nodes["app"].workers == 1  # --reload runs one worker


def test_free_port_offset_stays_below_the_ephemeral_range_and_skips_taken_ports(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from stackpanel.core.supervise import ports

    for _ in range(20):
        offset = free_port_offset([8000, 8080, 8081])
        assert 8000 + offset >= 10_000 and 8081 + offset < 32768
    # pretend every port divisible by 20 is taken: only offsets = 10 (mod 20) remain
    monkeypatch.setattr(ports, "_bindable", lambda port, host: port % 20 != 0)
    assert all(free_port_offset([8000, 8080, 8081]) % 20 == 10 for _ in range(20))
    monkeypatch.setattr(ports, "_bindable", lambda port, host: False)
    with pytest.raises(CompareError, match="no free port offset"):
        free_port_offset([8000])


def test_bad_settings_are_refused_before_anything_starts() -> None:
    with pytest.raises(CompareError, match="at least one profile"):
        compare_profiles([])
    with pytest.raises(CompareError, match="connections"):
        compare_profiles(["uvicorn-workers"], connections=0)
    with pytest.raises(CompareError, match="duration"):
        compare_profiles(["uvicorn-workers"], duration_s=0)
    with pytest.raises(CompareError, match="workers"):
        compare_profiles(["uvicorn-workers"], workers=0)
    with pytest.raises(CompareError, match="generator"):
        compare_profiles(["uvicorn-workers"], generator="ab")  # type: ignore[arg-type]


def test_a_profile_that_cannot_be_loaded_is_a_row_with_the_reason(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("version: 1\nname: x\nnodes:\n  app:\n    kind: uvicorn\n    prot: 1\n")
    events = []
    c = compare_profiles(["no-such-profile", str(broken)], duration_s=1, warmup_s=0, progress=events.append)
    assert [r.name for r in c.runs] == ["no-such-profile", "broken"]
    assert not any(r.ok for r in c.runs)
    assert "no such profile" in c.runs[0].reason
    assert "broken.yaml:6" in c.runs[1].reason  # file:line of the problem
    assert [e.phase for e in events] == ["failed", "failed"]
    assert str(events[0]).startswith("[1/2] no-such-profile: cannot load")


def test_every_entry_url_passes_the_loopback_guard_before_any_stack_starts(monkeypatch) -> None:
    from stackpanel.core.bench import compare as bench
    from stackpanel.core.errors import StackpanelError
    from stackpanel.core.loadgen.target import parse_target

    good = load_profile(builtin_dir() / "uvicorn-workers.yaml")
    app = good.nodes["app"]
    # A profile whose entry is not this machine (validation bypassed: the guard must hold anyway).
    elsewhere = good.model_copy(update={"name": "Elsewhere",
                                        "nodes": {"app": app.model_copy(update={"host": "192.0.2.7"})}})
    log: list[str] = []

    def checked(url: str):
        log.append(f"checked {url}")
        return parse_target(url)

    class NoStack:
        def __init__(self, profile, **kwargs) -> None:
            log.append(f"session {profile.name}")

        def start(self) -> None:
            raise StackpanelError("not starting servers in a unit test")

        def snapshot(self):
            return type("Snap", (), {"nodes": ()})()

        def close(self) -> None:
            pass

    monkeypatch.setattr(bench, "parse_target", checked)
    monkeypatch.setattr(bench, "StackSession", NoStack)
    c = compare_profiles([good, elsewhere], duration_s=1, warmup_s=0)
    first_session = next(i for i, line in enumerate(log) if line.startswith("session"))
    assert any("192.0.2.7" in line for line in log[:first_session])  # checked before anything started
    assert [line for line in log if line.startswith("session")] == [f"session {good.name}"]
    bad = c.runs[1]
    assert not bad.ok and "not a loopback address" in bad.reason


# -- chart -------------------------------------------------------------------------------------------


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_chart_is_a_png_drawn_offscreen_without_a_display(tmp_path: Path) -> None:
    """In a child process with no DISPLAY: the chart module must go offscreen by itself."""
    out = tmp_path / "chart.png"
    script = textwrap.dedent(f"""
        import math, sys
        from tests.unit.test_compare import comparison, failed, run
        from stackpanel.qt.chart import save_chart
        runs = [run("uvicorn-workers", 10234.0), run("nginx-uvicorn", 7400.0, errors={{"http_5xx": 2}}),
                failed("apache-uvicorn"), run("nginx-gunicorn-flask", 2500.0, latency_p99_ms=math.nan)]
        runs += [run(f"extra-{{i}}", 1000.0 * i) for i in range(1, 10)]
        save_chart(comparison(*runs[:4]), {str(out)!r})
        save_chart(comparison(*runs), {str(tmp_path / "tall.png")!r})
        import os; print(os.environ.get("QT_QPA_PLATFORM"))
        assert "PySide6" in sys.modules
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", script], env=env, cwd=root, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "offscreen"
    data = out.read_bytes()
    assert png_size(data) == (1600, 900)
    assert len(data) > 20_000  # text and bars, not an empty canvas
    w, h = png_size((tmp_path / "tall.png").read_bytes())
    assert w == 1600 and h > 900  # 13 rows need more room than 16:9


def test_importing_the_comparison_does_not_import_qt() -> None:
    code = ("import sys, stackpanel.core.bench, stackpanel.qt.chart\n"
            "assert not [m for m in sys.modules if m.startswith(('PySide6', 'shiboken6'))]\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_the_default_bench_path_is_the_entrys_probe_path() -> None:
    from stackpanel.core.bench.compare import bench_path

    unset = dataclasses.replace(SETTINGS, path=None)
    assert bench_path(load_profile(builtin_dir() / "nginx-gunicorn-flask.yaml"), unset) == "/healthz"
    assert bench_path(load_profile(builtin_dir() / "nginx-uvicorn.yaml"), unset) == "/"  # static index
    assert bench_path(load_profile(builtin_dir() / "nginx-uvicorn.yaml"), SETTINGS) == "/api/hello"
