from __future__ import annotations

import subprocess
import sys

import pytest

from stackpanel.core.loadgen import LoadConfig, LoadConfigError, LoadResult, LoadRun, LoadTargetError


@pytest.mark.parametrize(
    "kwargs",
    [
        {"connections": 0},
        {"duration_s": None, "requests": None},
        {"duration_s": -1},
        {"requests": 0},
        {"rate": 0},
        {"rate": float("inf")},
        {"processes": 0},
        {"timeout_s": 0},
        {"method": "POST"},
        {"headers": (("X-Bad", "a\r\nInjected: 1"),)},
        {"start_method": "teleport"},
    ],
)
def test_bad_settings_are_refused_with_a_reason(kwargs: dict) -> None:
    with pytest.raises(LoadConfigError, match="invalid load settings"):
        LoadConfig("http://127.0.0.1:8080/", **kwargs)


def test_modes() -> None:
    assert LoadConfig("http://127.0.0.1:1/").mode == "max"
    assert LoadConfig("http://127.0.0.1:1/", rate=100).mode == "rate"


def test_load_run_refuses_non_loopback_before_starting_a_thread() -> None:
    with pytest.raises(LoadTargetError):
        LoadRun(LoadConfig("http://192.168.1.1:8080/"))


def test_result_to_dict_is_json_ready() -> None:
    import json

    r = LoadResult(
        target="http://127.0.0.1:1/", mode="max", connections=1, duration_s=1.0, requests_ok=0,
        errors={"connect_refused": 3}, rps=0.0, latency_p50_ms=float("nan"), latency_p90_ms=float("nan"),
        latency_p99_ms=float("nan"), latency_max_ms=float("nan"), cpu_percent=1.0,
    )
    d = r.to_dict()
    assert d["errors_total"] == 3 and d["latency_p50_ms"] is None
    json.dumps(d, allow_nan=False)
    assert "connect_refused 3" in r.summary()


def test_loadgen_imports_no_qt() -> None:
    code = (
        "import sys, stackpanel.core.loadgen\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('PySide6', 'PyQt5', 'PyQt6', 'pyqtgraph')]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
