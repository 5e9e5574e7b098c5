"""The built-in load generator and the wrk adapter against a real uvicorn on loopback.

The app is a tiny raw-ASGI module written to a temp dir (no dependency on stackpanel.apps). It
counts the requests it serves so the tests can check, server-side, how many really arrived.
"""
from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from stackpanel.core.loadgen import LoadConfig, LoadProgress, LoadRun, run_load, run_wrk, wrk_available
from tests.conftest import free_ports

pytestmark = pytest.mark.integration

APP = r'''
import asyncio
import time

COUNT = 0
STALL_AT = None
STALL_MS = 0


async def _send(send, status, body, headers=()):
    hs = [(b"content-type", b"text/plain")] + list(headers)
    if body is not None:
        hs.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": hs})
    await send({"type": "http.response.body", "body": body or b""})


async def app(scope, receive, send):
    global COUNT, STALL_AT, STALL_MS
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    query = dict(p.split("=") for p in scope["query_string"].decode().split("&") if "=" in p)
    if path == "/count":
        return await _send(send, 200, str(COUNT).encode())
    if path == "/reset":
        COUNT = 0
        return await _send(send, 200, b"0")
    if path == "/arm":  # block the whole server for ms milliseconds after n more requests
        STALL_AT, STALL_MS = COUNT + int(query["n"]), int(query["ms"])
        return await _send(send, 200, b"armed")
    COUNT += 1
    if path == "/hello":
        if STALL_AT is not None and COUNT >= STALL_AT:
            STALL_AT = None
            time.sleep(STALL_MS / 1000)  # blocking on purpose: the server stalls
        return await _send(send, 200, b'{"message":"hello"}')
    if path == "/close":
        return await _send(send, 200, b"bye", [(b"connection", b"close")])
    if path == "/chunked":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for part in (b"one,", b"two,", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        return await send({"type": "http.response.body", "body": b""})
    if path.startswith("/status/"):
        return await _send(send, int(path.rsplit("/", 1)[1]), b"status")
    if path == "/slow":
        await asyncio.sleep(int(query.get("ms", "1000")) / 1000)
        return await _send(send, 200, b"slow")
    return await _send(send, 404, b"not found")
'''


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"uvicorn exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"uvicorn did not listen on {port} within {timeout} s")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    app_dir: Path = tmp_path_factory.mktemp("loadgen_app")
    (app_dir / "lg_test_app.py").write_text(APP)
    port = free_ports(1)[0]
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "uvicorn", "lg_test_app:app", "--app-dir", str(app_dir),
            "--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning",
        ],
        stdin=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _get(base: str, path: str) -> str:
    with urllib.request.urlopen(base + path, timeout=5) as resp:
        return resp.read().decode()


def _served(base: str) -> int:
    return int(_get(base, "/count"))


def test_count_mode_sends_exactly_that_many(server: str) -> None:
    _get(server, "/reset")
    r = run_load(LoadConfig(server + "/hello", connections=16, duration_s=None, requests=2000))
    assert _served(server) == 2000
    assert r.requests_ok == 2000 and r.errors_total == 0 and r.responses == 2000
    assert r.stopped_by == "count"
    assert r.rps > 0 and 0 < r.latency_p50_ms <= r.latency_p90_ms <= r.latency_p99_ms <= r.latency_max_ms
    assert r.cpu_percent > 0


def test_count_mode_over_two_processes_is_still_exact(server: str) -> None:
    _get(server, "/reset")
    r = run_load(LoadConfig(server + "/hello", connections=8, duration_s=None, requests=2000, processes=2))
    assert _served(server) == 2000
    assert r.requests_ok == 2000 and r.processes == 2 and r.errors_total == 0


def test_duration_mode_stops_on_time_and_reports_progress(server: str) -> None:
    seen: list[tuple[LoadProgress, str]] = []
    t0 = time.monotonic()
    r = run_load(
        LoadConfig(server + "/hello", connections=8, duration_s=1.5),
        progress=lambda p: seen.append((p, threading.current_thread().name)),
    )
    wall = time.monotonic() - t0
    assert wall < 1.5 + 1.0
    assert r.duration_s == pytest.approx(1.5, abs=0.1)
    assert r.stopped_by == "duration" and r.requests_ok > 100 and r.errors_total == 0
    assert 4 <= len(seen) <= 8  # ~4 per second
    assert seen[-1][0].requests_ok <= r.requests_ok and seen[-1][0].current_rps > 0
    assert seen[-1][0].connections_open == 8


def test_closed_port_reports_connection_errors_promptly(server: str) -> None:
    port = free_ports(1)[0]
    t0 = time.monotonic()
    r = run_load(LoadConfig(f"http://127.0.0.1:{port}/", connections=8, duration_s=1.0, give_up_after_s=None))
    assert time.monotonic() - t0 < 1.0 + 2.0
    assert r.requests_ok == 0 and r.errors["connect_refused"] > 0 and r.stopped_by == "duration"
    # With the default give-up, a long run against nothing ends after ~2 s with a reason.
    t0 = time.monotonic()
    r = run_load(LoadConfig(f"http://127.0.0.1:{port}/", connections=8, duration_s=30))
    assert time.monotonic() - t0 < 3.0
    assert r.aborted and "is the server running" in r.aborted and r.errors["connect_refused"] > 0
    # A count run against nothing ends too.
    t0 = time.monotonic()
    r = run_load(LoadConfig(f"http://127.0.0.1:{port}/", connections=4, duration_s=None, requests=50))
    assert time.monotonic() - t0 < 3.0 and r.errors_total > 0


def test_fixed_rate_keeps_the_rate(server: str) -> None:
    _get(server, "/reset")
    r = run_load(LoadConfig(server + "/hello", connections=8, duration_s=2.0, rate=400))
    served = _served(server)
    assert r.mode == "rate" and r.rate_target == 400
    assert r.rps == pytest.approx(400, rel=0.10)
    assert served == pytest.approx(800, rel=0.10)
    assert r.errors_total == 0


def test_fixed_rate_latency_includes_time_queued_behind_a_stall(server: str) -> None:
    """No coordinated omission: a 300 ms server stall shows in far more than the 4 in-flight requests."""
    _get(server, "/reset")
    _get(server, "/arm?n=100&ms=300")
    r = run_load(LoadConfig(server + "/hello", connections=4, duration_s=2.0, rate=200))
    assert r.latency_max_ms >= 250
    # ~60 requests were due during the stall: ~15 % of 400. A generator that measured from the
    # actual send time would put only the 4 in-flight requests (1 %) above a few ms.
    assert r.latency_p90_ms >= 30, r.summary()
    assert r.requests_ok == pytest.approx(400, rel=0.10)


def test_connection_close_reconnects_without_errors(server: str) -> None:
    _get(server, "/reset")
    r = run_load(LoadConfig(server + "/close", connections=4, duration_s=None, requests=300))
    assert _served(server) == 300
    assert r.requests_ok == 300 and r.errors_total == 0


def test_chunked_responses(server: str) -> None:
    r = run_load(LoadConfig(server + "/chunked", connections=4, duration_s=None, requests=500))
    assert r.requests_ok == 500 and r.errors_total == 0


def test_http_errors_are_counted_by_kind(server: str) -> None:
    r = run_load(LoadConfig(server + "/status/503", connections=2, duration_s=None, requests=50))
    assert r.requests_ok == 0 and r.errors["http_5xx"] == 50 and r.responses == 50
    r = run_load(LoadConfig(server + "/status/404", connections=2, duration_s=None, requests=50))
    assert r.errors["http_4xx"] == 50


def test_timeouts_are_counted_and_do_not_hang(server: str) -> None:
    t0 = time.monotonic()
    r = run_load(LoadConfig(server + "/slow?ms=3000", connections=4, duration_s=1.0, timeout_s=0.3))
    assert time.monotonic() - t0 < 2.0
    assert r.errors["timeout"] >= 4 and r.requests_ok == 0


def test_load_run_in_background_stops_promptly(server: str) -> None:
    threads: set[str] = set()
    done: list[object] = []
    serving = threading.Event()

    def progress(p: LoadProgress) -> None:
        threads.add(threading.current_thread().name)
        if p.requests_ok > 0:
            serving.set()

    run = LoadRun(LoadConfig(server + "/hello", connections=4, duration_s=30, progress_interval_s=0.1),
                  progress=progress, on_done=done.append).start()
    assert serving.wait(10)
    assert not run.done()
    t0 = time.monotonic()
    run.stop()
    r = run.result(timeout=2.0)
    assert time.monotonic() - t0 < 0.5
    assert r.stopped_by == "stopped" and r.requests_ok > 0 and r.duration_s < 2
    assert threads == {"stackpanel-loadgen"} and done == [r]


def test_load_run_stop_in_process_mode(server: str) -> None:
    serving = threading.Event()
    run = LoadRun(LoadConfig(server + "/hello", connections=4, duration_s=30, processes=2, progress_interval_s=0.1),
                  progress=lambda p: p.requests_ok > 0 and serving.set()).start()
    assert serving.wait(30)  # both worker processes are up and sending
    t0 = time.monotonic()
    run.stop()
    r = run.result(timeout=5.0)
    assert time.monotonic() - t0 < 2.0
    assert r.processes == 2 and r.requests_ok > 0 and r.stopped_by == "stopped"


@pytest.mark.skipif(not wrk_available(), reason="wrk not installed")
def test_wrk_adapter(server: str) -> None:
    r = run_wrk(server + "/hello", connections=4, duration_s=1, threads=1)
    assert r.generator == "wrk" and r.requests_ok > 100 and r.errors_total == 0
    assert r.latency_p50_ms > 0 and r.cpu_percent > 0
    port = free_ports(1)[0]
    r = run_wrk(f"http://127.0.0.1:{port}/", connections=2, duration_s=1, threads=1)
    assert r.aborted and r.requests_ok == 0
