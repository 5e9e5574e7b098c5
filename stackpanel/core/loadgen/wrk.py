"""Adapter for wrk (https://github.com/wg/wrk): run it for maximum-rate tests, read its report.

The same loopback guard as the built-in generator applies before wrk is started. wrk follows no
redirects. Its latencies are measured from actual send time (wrk, unlike wrk2, does not correct
for coordinated omission); its CPU use is read from the child's rusage.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
import shutil
import subprocess
import threading
import time

from stackpanel.core.loadgen.errors import WrkError
from stackpanel.core.loadgen.result import ErrorKind, LoadResult
from stackpanel.core.loadgen.target import parse_target

log = logging.getLogger("stackpanel.loadgen")

_TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_DURATION_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}

_LATENCY_ROW = re.compile(r"^\s*Latency\s+(\S+)\s+(\S+)\s+(\S+)\s+\S+\s*$", re.MULTILINE)
_PERCENTILE = re.compile(r"^\s*(\d+(?:\.\d+)?)%\s+(\d+(?:\.\d+)?)(us|ms|s|m|h)\s*$", re.MULTILINE)
_TOTAL = re.compile(r"^\s*(\d+) requests in (\d+(?:\.\d+)?)(us|ms|s|m|h),", re.MULTILINE)
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_RPS = re.compile(r"^Requests/sec:\s+(\d+(?:\.\d+)?)", re.MULTILINE)
_CONNECTIONS = re.compile(r"(\d+) threads? and (\d+) connections?")
_VALUE = re.compile(r"^(\d+(?:\.\d+)?)(us|ms|s|m|h)$")


def wrk_path() -> str | None:
    return shutil.which("wrk")


def wrk_available() -> bool:
    """True when a ``wrk`` executable is on PATH."""
    return wrk_path() is not None


def _ms(text: str) -> float:
    m = _VALUE.match(text)
    if not m:
        raise WrkError(f"cannot read wrk latency value {text!r}")
    return float(m.group(1)) * _TIME_UNITS[m.group(2)]


def wrk_command(
    url: str,
    *,
    connections: int = 16,
    duration_s: float = 10.0,
    threads: int | None = None,
    timeout_s: float | None = None,
    executable: str = "wrk",
) -> list[str]:
    """argv for ``wrk -t T -c N -d Ds --latency URL``.

    The URL goes through the loopback guard and wrk is handed the address the guard checked, not
    the name (``localhost`` becomes e.g. ``127.0.0.1``); the Host header stays the one written.
    """
    target = parse_target(url)
    if connections < 1:
        raise WrkError("wrk needs at least one connection")
    if threads is None:
        threads = min(connections, os.cpu_count() or 1)
    threads = max(1, min(threads, connections))  # wrk refuses more threads than connections
    seconds = max(1, math.ceil(duration_s))  # wrk takes whole seconds
    argv = [executable, "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--latency"]
    if timeout_s is not None:
        argv += ["--timeout", f"{max(1, math.ceil(timeout_s))}s"]
    if target.host != target.address:
        argv += ["-H", f"Host: {target.host_header}"]
    return argv + [target.address_url]


def parse_wrk_output(
    text: str,
    *,
    target: str,
    connections: int | None = None,
    cpu_percent: float = math.nan,
) -> LoadResult:
    """Turn wrk's ``--latency`` report into a :class:`LoadResult` (generator ``"wrk"``, mode ``"wrk"``).

    ``requests_ok`` is wrk's completed requests minus its "Non-2xx or 3xx responses" (which wrk
    does not split into 4xx and 5xx: they are reported as ``http_error``). ``rps`` is computed
    from ``requests_ok`` and wrk's own elapsed time, so it is comparable with the built-in
    generator's (wrk's "Requests/sec" line counts non-2xx responses too; kept in ``extra``).
    """
    m_total = _TOTAL.search(text)
    if not m_total:
        raise WrkError(f"no 'N requests in T' line in wrk output:\n{text.strip()[:2000]}")
    total = int(m_total.group(1))
    duration = float(m_total.group(2)) * _DURATION_UNITS[m_total.group(3)]
    if connections is None:
        m_conn = _CONNECTIONS.search(text)
        connections = int(m_conn.group(2)) if m_conn else 0

    errors = {
        ErrorKind.CONNECT.value: 0,
        ErrorKind.RESET.value: 0,
        ErrorKind.TIMEOUT.value: 0,
        ErrorKind.HTTP_ERROR.value: 0,
    }
    extra: dict[str, float | int] = {}
    m_sock = _SOCKET.search(text)
    if m_sock:
        c, r, w, t = (int(g) for g in m_sock.groups())
        errors[ErrorKind.CONNECT.value] = c
        errors[ErrorKind.RESET.value] = r + w
        errors[ErrorKind.TIMEOUT.value] = t
        extra.update(socket_read_errors=r, socket_write_errors=w)
    m_non = _NON2XX.search(text)
    non2xx = int(m_non.group(1)) if m_non else 0
    errors[ErrorKind.HTTP_ERROR.value] = non2xx
    ok = max(0, total - non2xx)

    percentiles = {float(p): float(v) * _TIME_UNITS[u] for p, v, u in _PERCENTILE.findall(text)}
    m_lat = _LATENCY_ROW.search(text)
    mean_ms = max_ms = math.nan
    if m_lat:
        mean_ms = _ms(m_lat.group(1))
        max_ms = _ms(m_lat.group(3))
    m_rps = _RPS.search(text)
    if m_rps:
        extra["wrk_requests_per_sec"] = float(m_rps.group(1))
    extra["wrk_requests"] = total
    return LoadResult(
        target=target,
        mode="wrk",
        connections=connections,
        duration_s=duration,
        requests_ok=ok,
        errors=errors,
        rps=ok / duration if duration > 0 else 0.0,
        latency_p50_ms=percentiles.get(50.0, math.nan),
        latency_p90_ms=percentiles.get(90.0, math.nan),
        latency_p99_ms=percentiles.get(99.0, math.nan),
        latency_max_ms=max_ms,
        cpu_percent=cpu_percent,
        processes=1,
        generator="wrk",
        latency_mean_ms=mean_ms,
        responses=total,
        stopped_by="duration",
        extra=extra,
    )


def run_wrk(
    url: str,
    *,
    connections: int = 16,
    duration_s: float = 10.0,
    threads: int | None = None,
    timeout_s: float | None = None,
) -> LoadResult:
    """Run wrk against a loopback URL and return its result. Blocks for about ``duration_s``.

    Raises :class:`WrkError` when wrk is missing or fails; a refused connection is reported as a
    result with ``aborted`` set and a ``connect_refused`` error, like the built-in generator.
    """
    exe = wrk_path()
    if exe is None:
        raise WrkError("wrk is not installed (Debian/Ubuntu: apt install wrk; macOS: brew install wrk)")
    argv = wrk_command(
        url, connections=connections, duration_s=duration_s, threads=threads, timeout_s=timeout_s, executable=exe
    )
    target = parse_target(url)
    log.info("running %s", " ".join(argv))
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    limit = max(1, math.ceil(duration_s)) + 15.0
    killer = threading.Timer(limit, proc.kill)
    killer.daemon = True
    killer.start()
    try:
        assert proc.stdout is not None
        out = proc.stdout.read().decode("utf-8", "replace")
        proc.stdout.close()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        killer.cancel()
        if proc.returncode is None:
            proc.kill()
            proc.wait()
    wall = time.monotonic() - started
    cpu = 100.0 * (usage.ru_utime + usage.ru_stime) / wall if wall > 0 else math.nan
    if "unable to connect" in out:
        reason = out.strip().splitlines()[-1] if out.strip() else "unable to connect"
        return LoadResult(
            target=target.url, mode="wrk", connections=connections, duration_s=wall, requests_ok=0,
            errors={ErrorKind.CONNECT_REFUSED.value: 1}, rps=0.0, latency_p50_ms=math.nan,
            latency_p90_ms=math.nan, latency_p99_ms=math.nan, latency_max_ms=math.nan,
            cpu_percent=cpu, generator="wrk", stopped_by="gave up",
            aborted=f"wrk: {reason}; is the server running?",
        )
    if proc.returncode != 0:
        raise WrkError(f"wrk exited with status {proc.returncode}:\n{out.strip()[:2000]}")
    result = parse_wrk_output(out, target=target.url, connections=connections, cpu_percent=cpu)
    # wall includes wrk's start-up and thread join; CPU% is relative to wrk's own run time.
    if result.duration_s > 0:
        cpu = 100.0 * (usage.ru_utime + usage.ru_stime) / result.duration_s
    return dataclasses.replace(
        result, cpu_percent=cpu, extra={**result.extra, "argv": argv, "threads": int(argv[2])}
    )
