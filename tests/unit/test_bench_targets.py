"""`stackpanel bench --wrk` without profiles: the proxy-path targets' arithmetic and report (the
measurement itself runs in tests/integration/test_bench.py)."""
from __future__ import annotations

import json
import math

from stackpanel.cli import main
from stackpanel.core.bench.targets import PROXY_TARGETS, Target, TargetPair, TargetReport, TargetResult

SETTINGS = {"pairs": 3, "duration_s": 4.0, "warmup_s": 1.0, "connections": 64, "workers": 2, "path": "/api/hello",
            "generator": "wrk"}


def test_the_targets_are_the_issues() -> None:
    assert [(t.profile, t.at_least) for t in PROXY_TARGETS] == [
        ("nginx-uvicorn", 0.85), ("nginx-gunicorn-uvicorn", 0.85), ("apache-uvicorn", 0.65),
        ("nginx-apache-uvicorn", 0.55)]


def test_a_target_is_the_median_of_its_pairs_ratios_and_failed_pairs_claim_nothing() -> None:
    pairs = (TargetPair(True, 1000, 900, baseline_cpu_us=150, proxied_cpu_us=200), TargetPair(False, 1000, 700),
             TargetPair(True, 2000, 1800),
             TargetPair(False, 1000, math.nan, problem="nginx-uvicorn: did not start"))
    result = TargetResult(Target("nginx-uvicorn", 0.85), pairs)
    assert result.ratios == [0.9, 0.7, 0.9]
    assert result.median == 0.9 and result.met is True
    assert result.cpu_median == 0.75  # the one pair with CPU figures
    assert TargetResult(Target("apache-uvicorn", 0.95), pairs).met is False
    nothing = TargetResult(Target("apache-uvicorn", 0.65), pairs[3:])
    assert nothing.met is None and math.isnan(nothing.median)
    report = TargetReport((result, nothing), SETTINGS, {"nproc": 2, "loadavg_1m": 1.5}, 2.5)
    assert not report.all_met
    table = report.format_table()
    assert "3 A/B pairs of 4 s" in table and "load average 1.5 at start, 2.5 at the end" in table
    row = next(line for line in table.splitlines() if line.startswith("nginx-uvicorn"))
    assert "0.90" in row and "0.70–0.90" in row and "0.85" in row and " met " in row and "0.75" in row
    assert "1,000→900" in row and "failed" in row
    assert "no data" in next(line for line in table.splitlines() if line.startswith("apache-uvicorn"))
    assert "nginx-uvicorn: did not start" in table
    doc = json.loads(report.to_json())
    assert doc["baseline"] == "uvicorn-workers"
    assert doc["results"][0]["median"] == 0.9 and doc["results"][1]["met"] is None
    assert doc["results"][0]["pairs"][3]["ratio"] is None
    assert doc["results"][0]["cpu_median"] == 0.75 and doc["results"][0]["pairs"][1]["cpu_ratio"] is None


def test_bench_without_profiles_needs_wrk_and_refuses_options_for_named_profiles(capsys) -> None:
    assert main(["bench"]) == 2
    assert "--wrk alone for the proxy-path targets" in capsys.readouterr().err
    assert main(["bench", "--wrk", "--csv", "x.csv"]) == 2
    assert "--csv, --png and -n are for named profiles" in capsys.readouterr().err
    assert main(["bench", "--wrk", "--pairs", "0"]) == 2
