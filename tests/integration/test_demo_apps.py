"""The demo apps served for real: FastAPI under uvicorn (and gunicorn+UvicornWorker), Flask under gunicorn."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from stackpanel.apps import fastapi_demo, flask_demo
from tests.conftest import free_ports

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class Served:
    app: str  # "fastapi" | "flask"
    base: str  # http://127.0.0.1:PORT
    port: int
    proc: subprocess.Popen[bytes]
    forks_workers: bool  # gunicorn: requests are served by children of proc

    def worker_pids(self) -> set[int]:
        if not self.forks_workers:
            return {self.proc.pid}
        return {c.pid for c in psutil.Process(self.proc.pid).children()}


SERVERS: dict[str, tuple[str, bool, list[str]]] = {
    "fastapi-uvicorn": ("fastapi", False,
                        ["-m", "uvicorn", "stackpanel.apps.fastapi_demo:app", "--host", "127.0.0.1",
                         "--port", "{port}", "--no-access-log"]),
    "flask-gunicorn": ("flask", True,
                       ["-m", "gunicorn", "--no-control-socket", "-w", "2", "-b", "127.0.0.1:{port}",
                        "stackpanel.apps.flask_demo:app"]),
    "fastapi-gunicorn-uvicorn-worker": ("fastapi", True,
                                        ["-m", "gunicorn", "--no-control-socket", "-w", "2",
                                         "-k", "uvicorn_worker.UvicornWorker", "-b", "127.0.0.1:{port}",
                                         "stackpanel.apps.fastapi_demo:app"]),
}


def get(url: str, headers: dict[str, str] | None = None, timeout: float = 15.0) -> tuple[int, Any]:
    """(status, parsed JSON or None). Error responses are closed too: gunicorn 27's sync worker
    stays blocked for ~2 s on a client that keeps the socket open after ``Connection: close``."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        with err:
            err.read()
            return err.code, None


def wait_ready(served: Served, log_path: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if served.proc.poll() is not None:
            pytest.fail(f"server exited with {served.proc.returncode}:\n{log_path.read_text()}")
        try:
            healthy = get(served.base + "/healthz", timeout=1.0) == (200, {"ok": True})
            if healthy and (not served.forks_workers or len(served.worker_pids()) >= 2):
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.05)
    pytest.fail(f"server not ready after {READY_TIMEOUT_S}s:\n{log_path.read_text()}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        except ProcessLookupError:
            pass
    # whatever is left of the group (workers of a server killed hard) goes too
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module", params=list(SERVERS))
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    app, forks, argv = SERVERS[request.param]
    port = free_ports(1)[0]
    log_path = tmp_path_factory.mktemp(request.param) / "server.log"
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, *(a.format(port=port) for a in argv)],
            cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    served = Served(app=app, base=f"http://127.0.0.1:{port}", port=port, proc=proc, forks_workers=forks)
    try:
        wait_ready(served, log_path)
        yield served
    finally:
        stop(proc)
    assert not psutil.pid_exists(proc.pid) or psutil.Process(proc.pid).status() == psutil.STATUS_ZOMBIE


@pytest.mark.parametrize("path", ["/", "/api", "/api/", "/api/hello", "/hello"])
def test_hello(served: Served, path: str) -> None:
    status, body = get(served.base + path)
    assert status == 200
    assert body == {"message": "hello from stackpanel", "app": served.app, "pid": body["pid"]}
    assert body["pid"] in served.worker_pids()


@pytest.mark.parametrize("path", ["/healthz", "/api/healthz"])
def test_healthz(served: Served, path: str) -> None:
    assert get(served.base + path) == (200, {"ok": True})


def test_pid_names_the_serving_worker(served: Served) -> None:
    _, body = get(served.base + "/api/pid")
    assert body["pid"] in served.worker_pids()
    if served.forks_workers:
        assert body["ppid"] == served.proc.pid
    else:
        assert body["pid"] == served.proc.pid


def test_wait_takes_at_least_the_time_asked(served: Served) -> None:
    start = time.monotonic()
    _, body = get(served.base + "/api/wait?ms=200")
    assert time.monotonic() - start >= 0.2
    assert body["waited_ms"] == 200 and body["pid"] in served.worker_pids()
    _, body = get(served.base + "/api/wait?ms=-50")
    assert body["waited_ms"] == 0
    _, body = get(served.base + "/wait?ms=junk")
    assert body["waited_ms"] == 0


def test_cpu_burns_cpu_in_the_worker(served: Served) -> None:
    _, first = get(served.base + "/api/pid")
    # with several workers, find one and measure it (retry until the same worker serves /cpu)
    for _ in range(20):
        worker = psutil.Process(first["pid"])
        before = sum(worker.cpu_times()[:2])
        start = time.monotonic()
        _, body = get(served.base + "/api/cpu?ms=150")
        elapsed = time.monotonic() - start
        if body["pid"] != first["pid"]:
            first = {"pid": body["pid"]}
            continue
        used = sum(worker.cpu_times()[:2]) - before
        assert body["burned_ms"] == 150
        assert elapsed >= 0.15
        assert used >= 0.13, f"worker used only {used:.3f}s of CPU"
        return
    pytest.fail("never hit the same worker twice")


def test_headers_echoes_forwarding_headers(served: Served) -> None:
    sent = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https", "X-Request-ID": "req-42"}
    _, body = get(served.base + "/api/headers", headers=sent)
    assert body["x-forwarded-for"] == "203.0.113.7"
    assert body["x-forwarded-proto"] == "https"
    assert body["x-request-id"] == "req-42"
    assert body["host"] == f"127.0.0.1:{served.port}"
    assert body["pid"] in served.worker_pids()
    _, bare = get(served.base + "/headers")
    assert bare["x-request-id"] is None and bare["x-forwarded-for"] is None


def test_unknown_path_is_404(served: Served) -> None:
    assert get(served.base + "/api/nope")[0] == 404


def test_status_fails_on_purpose(served: Served) -> None:
    assert get(served.base + "/api/status")[0] == 500
    assert get(served.base + "/status?code=503")[0] == 503
    assert get(served.base + "/api/status?code=201")[0] == 201
    assert get(served.base + "/api/status?code=junk")[0] == 500


@pytest.mark.parametrize("module", [fastapi_demo, flask_demo])
def test_clamp_ms(module: Any) -> None:
    assert module.clamp_ms(None) == 0
    assert module.clamp_ms("250") == 250
    assert module.clamp_ms("12.7") == 12
    assert module.clamp_ms("-3") == 0
    assert module.clamp_ms("99999") == 10_000
    assert module.clamp_ms("abc") == 0
    assert module.clamp_ms("inf") == 0 and module.clamp_ms("nan") == 0 and module.clamp_ms("1e400") == 0
    assert module.clamp_ms("5000", module.MAX_CPU_MS) == 1000
