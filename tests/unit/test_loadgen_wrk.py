from __future__ import annotations

import math

import pytest

from stackpanel.core.loadgen import WrkError, parse_wrk_output

# Captured from wrk 4.1.0 (Debian) against uvicorn on this machine.
CLEAN = """\
Running 3s test @ http://127.0.0.1:18080/api/hello
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   631.47us  714.30us   9.20ms   92.08%
    Req/Sec    15.86k     3.65k   29.47k    72.13%
  Latency Distribution
     50%  398.00us
     75%  635.00us
     90%    0.99ms
     99%    4.11ms
  96173 requests in 3.10s, 13.21MB read
Requests/sec:  31026.51
Transfer/sec:      4.26MB
"""

NON2XX = """\
Running 1s test @ http://127.0.0.1:18082/x
  1 threads and 2 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   134.54us  371.48us   4.58ms   96.70%
    Req/Sec    24.64k     5.26k   32.30k    45.45%
  Latency Distribution
     50%   74.00us
     75%   92.00us
     90%  108.00us
     99%    2.33ms
  26945 requests in 1.10s, 2.85MB read
  Non-2xx or 3xx responses: 26945
Requests/sec:  24500.35
Transfer/sec:      2.59MB
"""

# Format of wrk's socket-error line (src/wrk.c), with a slow server: latencies in seconds.
ERRORS = """\
Running 10s test @ http://127.0.0.1:8080/slow
  4 threads and 100 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.52s   301.22ms   1.99s    71.00%
    Req/Sec     10.11      6.02    30.00     80.00%
  Latency Distribution
     50%    1.50s
     75%    1.75s
     90%    1.90s
     99%    1.99s
  612 requests in 1.00m, 80.00KB read
  Socket errors: connect 3, read 7, write 1, timeout 25
  Non-2xx or 3xx responses: 12
Requests/sec:     10.18
Transfer/sec:      1.33KB
"""


def test_clean_run() -> None:
    r = parse_wrk_output(CLEAN, target="http://127.0.0.1:18080/api/hello", cpu_percent=55.0)
    assert r.generator == "wrk" and r.mode == "wrk"
    assert r.connections == 16
    assert r.requests_ok == 96173 and r.responses == 96173
    assert r.duration_s == pytest.approx(3.10)
    assert r.rps == pytest.approx(96173 / 3.10)
    assert r.latency_p50_ms == pytest.approx(0.398)
    assert r.latency_p90_ms == pytest.approx(0.99)
    assert r.latency_p99_ms == pytest.approx(4.11)
    assert r.latency_max_ms == pytest.approx(9.20)
    assert r.latency_mean_ms == pytest.approx(0.63147)
    assert r.errors_total == 0
    assert r.cpu_percent == 55.0
    assert r.extra["wrk_requests_per_sec"] == pytest.approx(31026.51)
    assert r.to_dict()["errors_total"] == 0


def test_non_2xx_are_errors_not_ok() -> None:
    r = parse_wrk_output(NON2XX, target="http://127.0.0.1:18082/x")
    assert r.requests_ok == 0
    assert r.errors["http_error"] == 26945
    assert r.rps == 0
    assert r.latency_p99_ms == pytest.approx(2.33)
    assert r.to_dict()["cpu_percent"] is None  # NaN becomes null for JSON


def test_socket_errors_and_second_units() -> None:
    r = parse_wrk_output(ERRORS, target="http://127.0.0.1:8080/slow", connections=100)
    assert r.duration_s == pytest.approx(60.0)
    assert r.errors == {"connect": 3, "reset": 8, "timeout": 25, "http_error": 12}
    assert r.requests_ok == 600
    assert r.latency_p50_ms == pytest.approx(1500.0)
    assert r.latency_max_ms == pytest.approx(1990.0)
    assert r.latency_mean_ms == pytest.approx(1520.0)


def test_unreadable_output_raises() -> None:
    with pytest.raises(WrkError, match="requests in"):
        parse_wrk_output("unable to connect to 127.0.0.1:1 Connection refused\n", target="x")


def test_missing_percentiles_are_nan() -> None:
    text = "  10 requests in 1.00s, 1.00KB read\nRequests/sec: 10.00\n"
    r = parse_wrk_output(text, target="x", connections=1)
    assert math.isnan(r.latency_p99_ms) and r.requests_ok == 10
