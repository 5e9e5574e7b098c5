"""The edge for real apps, against the real servers: WebSockets, streaming, anchored prefixes,
strip_prefix, body limits, timeouts, headers, gzip, cache headers and rate limits.

Before this wave a WebSocket got a 404 through both proxies, a 2 MB upload a 413, and /api also
matched /apiary.
"""
from __future__ import annotations

import contextlib
import gzip
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from stackpanel.core.errors import ProfileError
from stackpanel.core.profiles.loader import load_profile_text
from stackpanel.core.session import StackSession
from tests.conftest import free_ports
from tests.integration.conftest import builtin

pytestmark = pytest.mark.integration

PROXIED_BUILTINS = ["nginx-uvicorn", "nginx-split", "apache-uvicorn", "nginx-apache-uvicorn",
                    "nginx-gunicorn-uvicorn", "nginx-gunicorn-flask"]


def request(port: int, method: str, target: str, body: bytes = b"", headers: dict[str, str] | None = None,
            timeout: float = 15.0) -> tuple[int, dict[str, str], bytes, list[float]]:
    """(status, headers, body, arrival time of each received piece) for one raw HTTP/1.1 request."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: localhost:{port}", "Connection: close",
             f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    arrivals: list[float] = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        try:
            s.sendall(body)
        except OSError:
            pass  # a proxy that refuses the body may close before it is all sent
        data = b""
        try:
            while chunk := s.recv(65536):
                arrivals.append(time.monotonic())
                data += chunk
        except ConnectionResetError:
            pass
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    if parsed.get("transfer-encoding") == "chunked":
        rest = _unchunk(rest)
    return int(status_line.split()[1]), parsed, rest, arrivals


def _unchunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2:]
    return out


@pytest.fixture(scope="module", params=PROXIED_BUILTINS)
def builtin_stack(request: pytest.FixtureRequest,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    profile = builtin(request.param)
    session = StackSession(profile, run_dir=tmp_path_factory.mktemp(request.param) / "run")
    try:
        session.start()
        yield request.param, profile.nodes[profile.entry].port
    finally:
        session.close()


def test_a_stream_arrives_event_by_event_through_every_builtin_proxy(builtin_stack: tuple[str, int]) -> None:
    _name, port = builtin_stack
    status, headers, body, arrivals = request(port, "GET", "/api/events?n=3&ms=400")
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    assert body.count(b"data: ") == 3
    # three events 400 ms apart: the first reaches the client long before the stream ends
    assert arrivals[-1] - arrivals[0] > 0.5, arrivals


def test_a_websocket_echoes_through_every_builtin_proxy(builtin_stack: tuple[str, int]) -> None:
    name, port = builtin_stack
    if name == "nginx-gunicorn-flask":
        # WSGI has no WebSockets: the upgrade reaches Flask, which answers a plain 404 (no hang).
        with pytest.raises(InvalidStatus) as info:
            connect(f"ws://127.0.0.1:{port}/api/ws/echo", open_timeout=10)
        assert info.value.response.status_code == 404
        return
    with connect(f"ws://127.0.0.1:{port}/api/ws/echo", open_timeout=10) as ws:
        for text in ("hello", "x" * 70_000, "ü"):
            ws.send(text)
            assert ws.recv(timeout=10) == text
    # plain requests still work afterwards (the upgrade did not poison the pooled connections)
    assert request(port, "GET", "/api/hello")[0] == 200


# ----------------------------------------------------------------- routes and limits


def _limits_profile(kind: str, ports: list[int], site: Path) -> str:
    rate = "\n        limits: {rate_limit: {requests_per_second: 1, burst: 0}}" if kind == "nginx" else ""
    return f"""\
version: 1
name: edge limits ({kind})
nodes:
  edge:
    kind: {kind}
    port: {ports[0]}
    limits:
      max_body_mb: 1
      headers: {{X-Frame-Options: DENY, Content-Security-Policy: "default-src 'self'; img-src *"}}
    routes:
      - path: /api
        to: app
        limits: {{max_body_mb: 3, read_timeout_seconds: 1}}
      - path: /mounted
        to: mounted
        strip_prefix: true
      - path: /legacy
        to: legacy
        strip_prefix: true
      - path: /limited
        to: app{rate}
      - path: /files
        static: {site}
        cache_seconds: 60
        limits: {{gzip: true}}
  app:
    kind: uvicorn
    port: {ports[1]}
    app: {{module: stackpanel.apps.fastapi_demo:app}}
    readiness_probe: {{http_get: {{path: /healthz}}}}
  mounted:
    kind: uvicorn
    port: {ports[2]}
    app: {{module: stackpanel.apps.fastapi_demo:app}}
    readiness_probe: {{http_get: {{path: /healthz}}}}
  legacy:
    kind: gunicorn
    port: {ports[3]}
    app: {{module: stackpanel.apps.flask_demo:app, interface: wsgi}}
    readiness_probe: {{http_get: {{path: /healthz}}}}
"""


@pytest.fixture(scope="module", params=["nginx", "apache"])
def limits_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    tmp = tmp_path_factory.mktemp(f"limits-{request.param}")
    site = tmp / "site"
    site.mkdir()
    (site / "big.txt").write_text("stackpanel " * 1000)
    tmp.chmod(0o755)
    ports = free_ports(4)
    text = _limits_profile(request.param, ports, site)
    session = StackSession(load_profile_text(text, tmp / "p.yaml"), run_dir=tmp / "run")
    try:
        session.start()
        yield request.param, ports[0]
    finally:
        session.close()


def test_prefixes_are_anchored(limits_stack: tuple[str, int]) -> None:
    _kind, port = limits_stack
    assert request(port, "GET", "/api")[0] == 200
    assert request(port, "GET", "/api/hello")[0] == 200
    status, _h, body, _a = request(port, "GET", "/apiary")
    assert status == 404 and b"detail" not in body  # the proxy's own 404: never reached the app


def test_strip_prefix_and_the_apps_root_path(limits_stack: tuple[str, int]) -> None:
    _kind, port = limits_stack
    status, _h, body, _a = request(port, "GET", "/mounted/headers")
    seen = json.loads(body)
    assert status == 200 and seen["root_path"] == "/mounted" and seen["x-forwarded-prefix"] == "/mounted"
    status, _h, body, _a = request(port, "GET", "/legacy/headers")  # gunicorn: SCRIPT_NAME
    seen = json.loads(body)
    assert status == 200 and seen["root_path"] == "/legacy" and seen["x-forwarded-prefix"] == "/legacy"


def test_body_size_limits_per_proxy_and_route(limits_stack: tuple[str, int]) -> None:
    _kind, port = limits_stack
    two_mb = b"x" * (2 * 1024 * 1024)
    # /api allows 3 MB: the body reaches the app (which only answers GET: 405)
    assert request(port, "POST", "/api/hello", two_mb)[0] == 405
    assert request(port, "POST", "/api/hello", two_mb * 2)[0] == 413
    assert request(port, "POST", "/limited/x", two_mb)[0] == 413  # the node's 1 MB


def test_read_timeout_per_route(limits_stack: tuple[str, int]) -> None:
    kind, port = limits_stack
    # nginx says 504 Gateway Timeout; Apache's mod_proxy_http reports a read timeout as 502
    assert request(port, "GET", "/api/wait?ms=3000")[0] == (504 if kind == "nginx" else 502)
    assert request(port, "GET", "/mounted/wait?ms=1500")[0] == 200  # the default read timeout is 60 s


def test_extra_headers_cache_and_gzip(limits_stack: tuple[str, int]) -> None:
    _kind, port = limits_stack
    for target in ("/api/hello", "/files/big.txt", "/apiary"):
        _s, headers, _b, _a = request(port, "GET", target)
        assert headers["x-frame-options"] == "DENY", target
        assert headers["content-security-policy"] == "default-src 'self'; img-src *", target
    status, headers, body, _a = request(port, "GET", "/files/big.txt", headers={"Accept-Encoding": "gzip"})
    assert status == 200 and headers.get("content-encoding") == "gzip"
    assert gzip.decompress(body) == ("stackpanel " * 1000).encode()
    assert "max-age=60" in headers["cache-control"]
    assert "content-encoding" not in request(port, "GET", "/api/hello", headers={"Accept-Encoding": "gzip"})[1]


def test_rate_limit_answers_429_on_nginx_and_is_refused_for_apache(limits_stack: tuple[str, int],
                                                                   tmp_path: Path) -> None:
    kind, port = limits_stack
    if kind == "apache":
        text = _limits_profile("nginx", free_ports(4), tmp_path).replace("kind: nginx", "kind: apache")
        with pytest.raises(ProfileError, match="Apache has no request-rate limit"):
            load_profile_text(text, tmp_path / "p.yaml")
        return
    statuses = [request(port, "GET", "/limited/hello")[0] for _ in range(5)]
    assert statuses[0] == 404 and statuses.count(429) >= 3, statuses  # 404: the app has no /limited/hello


def test_the_request_id_goes_back_to_the_client(builtin_stack: tuple[str, int]) -> None:
    _name, port = builtin_stack
    _s, headers, _b, _a = request(port, "GET", "/api/hello", headers={"X-Request-ID": "from-the-client-42"})
    assert headers["x-request-id"] == "from-the-client-42"  # a request the client tagged keeps its id
    _s, headers, _b, _a = request(port, "GET", "/api/hello")
    assert len(headers["x-request-id"]) >= 16  # minted by the edge


@pytest.mark.parametrize("name", ["nginx-uvicorn", "nginx-gunicorn-uvicorn"])
def test_the_live_view_counts_open_websockets(name: str, tmp_path: Path) -> None:
    """WebSockets are long-lived: req/s never shows them. The app tier counts the open ones."""
    profile = builtin(name)
    session = StackSession(profile, run_dir=tmp_path / "run", metrics_mode="manual")
    port = profile.nodes[profile.entry].port

    def open_now() -> int:
        session.tick_metrics()
        node = session.metrics_snapshot().node("app")
        return node.websockets_open if node is not None else -1

    def settle(expected: int) -> int:
        deadline = time.monotonic() + 10
        while (count := open_now()) != expected and time.monotonic() < deadline:
            time.sleep(0.05)
        return count

    try:
        session.start()
        stack = contextlib.ExitStack()
        sockets = [stack.enter_context(connect(f"ws://127.0.0.1:{port}/api/ws/echo", open_timeout=10))
                   for _ in range(3)]
        for ws in sockets:
            ws.send("x")
            assert ws.recv(timeout=10) == "x"
        assert settle(3) == 3
        for ws in sockets[:2]:
            ws.close()
        assert settle(1) == 1
        stack.close()
        assert settle(0) == 0
        app_log = session.stack.paths.access_log("app").read_text()
        assert app_log.count(' WS "/api/ws/echo"') >= 3 and " 101 " in app_log  # each closed one is logged
    finally:
        session.close()
