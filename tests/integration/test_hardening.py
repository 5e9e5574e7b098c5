"""What an attacker or a careless user tries, against the real servers.

Static routes never serve a byte outside their directory, other Host names get 421 (DNS
rebinding), slow clients cannot starve Apache, and environment or a gunicorn.conf.py cannot change
a server's command line. Each test failed on the build before the hardening issue.
"""
from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stackpanel.core.profiles.loader import load_profile_text
from stackpanel.core.session import StackSession
from stackpanel.core.supervise.events import WorkersChanged
from stackpanel.core.supervise.process import alive_pids
from tests.conftest import free_ports

pytestmark = pytest.mark.integration

SECRET = "SECRET-d41d8cd98f00"


def raw_get(port: int, target: str, host: str | None = None, timeout: float = 10.0) -> tuple[int, bytes, bytes]:
    """(status, headers, body) for a request line sent exactly as given (no client normalisation)."""
    host = host or f"localhost:{port}"
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head, body


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """tmp/www/site holds the public files; tmp/www/secret.txt, a link out and a linked dir must stay private."""
    www = tmp_path / "www"
    public = www / "site"
    public.mkdir(parents=True)
    (public / "index.html").write_text("<h1>public</h1>\n")
    (public / "ok.txt").write_text("public file\n")
    (www / "secret.txt").write_text(SECRET + "\n")
    (www / "private").mkdir()
    (www / "private" / "secret.txt").write_text(SECRET + "\n")
    (public / "link.txt").symlink_to(www / "secret.txt")
    (public / "linkdir").symlink_to(www / "private")
    os.chmod(tmp_path, 0o755)
    return public


def _profile(tmp_path: Path, kind: str, port: int, extra: str = "") -> str:
    return f"""\
version: 1
name: static {kind}
nodes:
  edge:
    kind: {kind}
    port: {port}
{extra}    routes:
      - path: /files
        static: www/site
      - path: /
        static: www/site
"""


@pytest.fixture(params=["nginx", "apache"])
def static_stack(request: pytest.FixtureRequest, tmp_path: Path, site: Path) -> Iterator[int]:
    port = free_ports(1)[0]
    text = _profile(tmp_path, request.param, port)
    session = StackSession(load_profile_text(text, tmp_path / "p.yaml"), run_dir=tmp_path / "run")
    try:
        session.start()
        yield port
    finally:
        session.close()


TRAVERSALS = [
    "/files../secret.txt", "/files../private/secret.txt", "/files/../secret.txt", "/files/..%2fsecret.txt",
    "/files/%2e%2e/secret.txt", "/files/%2E%2E/secret.txt", "/files/.%2e/secret.txt", "/files%2f..%2fsecret.txt",
    "/files..%2fsecret.txt", "/files/%2e%2e%2fsecret.txt", "/files/..;/secret.txt", "/files/..\\secret.txt",
    "/files/link.txt", "/files/linkdir/secret.txt", "/link.txt", "/linkdir/secret.txt", "/../secret.txt",
    "/%2e%2e/secret.txt", "/..%2fsecret.txt", "//../secret.txt", "/files/....//secret.txt",
    "/files/%252e%252e/secret.txt", "/files/%c0%ae%c0%ae/secret.txt",
]


def test_static_routes_never_serve_a_byte_outside_their_directory(static_stack: int) -> None:
    port = static_stack
    assert raw_get(port, "/files/ok.txt")[::2] == (200, b"public file\n")
    assert raw_get(port, "/ok.txt")[::2] == (200, b"public file\n")
    status, head, _ = raw_get(port, "/files")
    location = next(h for h in head.split(b"\r\n") if h.lower().startswith(b"location:"))
    # the same host and port the client used (nginx: relative; Apache: absolute from Host)
    assert status == 301 and location.split(b" ", 1)[1] in (b"/files/", f"http://localhost:{port}/files/".encode())
    for target in TRAVERSALS:
        status, _head, body = raw_get(port, target)
        assert SECRET.encode() not in body, f"{target} served the secret"
        assert status in (400, 403, 404), (target, status)


def test_symlinks_are_followed_only_when_the_route_allows_it(tmp_path: Path, site: Path) -> None:
    port = free_ports(1)[0]
    text = _profile(tmp_path, "nginx", port).replace("        static: www/site\n",
                                                     "        static: www/site\n        follow_symlinks: true\n", 1)
    session = StackSession(load_profile_text(text, tmp_path / "p.yaml"), run_dir=tmp_path / "run")
    try:
        session.start()
        assert raw_get(port, "/files/link.txt")[::2] == (200, (SECRET + "\n").encode())  # opted in
        assert raw_get(port, "/link.txt")[0] == 403  # the other route did not
    finally:
        session.close()


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    """nginx → apache → uvicorn (the demo app echoes the Host it received), plus server_names."""
    tmp = tmp_path_factory.mktemp("proxied")
    edge, mid, app = free_ports(3)
    text = f"""\
version: 1
name: rebinding
nodes:
  edge:
    kind: nginx
    port: {edge}
    server_names: [myapp.test]
    routes: [{{path: /api, to: mid}}]
  mid:
    kind: apache
    port: {mid}
    routes: [{{path: /api, to: app}}]
  app:
    kind: uvicorn
    port: {app}
    app: {{module: stackpanel.apps.fastapi_demo:app}}
    readiness_probe: {{http_get: {{path: /healthz}}}}
"""
    session = StackSession(load_profile_text(text, tmp / "p.yaml"), run_dir=tmp / "run")
    try:
        session.start()
        yield {"edge": edge, "mid": mid, "app": app}
    finally:
        session.close()


@pytest.mark.parametrize("tier", ["edge", "mid"])
@pytest.mark.parametrize("host", ["evil.example", "localhost.evil.example", "127.0.0.1.nip.io", "attacker"])
def test_other_host_names_get_421(proxied: dict[str, int], tier: str, host: str) -> None:
    status, _head, body = raw_get(proxied[tier], "/api/headers", host=host)
    assert status == 421 and b'"host"' not in body


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]", "app.localhost", "myapp.test"])
def test_declared_names_pass_and_the_app_sees_the_original_host(proxied: dict[str, int], host: str) -> None:
    import json

    port = proxied["edge"]
    with_port = f"{host}:{port}"
    status, _head, body = raw_get(port, "/api/headers", host=with_port)
    assert status == 200, (host, body)
    assert json.loads(body)["host"] == with_port


def test_apache_behind_nginx_accepts_the_names_nginx_forwards(proxied: dict[str, int]) -> None:
    # myapp.test is declared on nginx only; apache behind it must accept what nginx forwards.
    status, _head, _body = raw_get(proxied["mid"], "/api/headers", host="myapp.test")
    assert status == 200


def test_slow_clients_do_not_starve_apache(tmp_path: Path, site: Path) -> None:
    """More slow-header connections than Apache has threads: mod_reqtimeout cuts them off (after
    its 5 s header timeout at < 500 B/s) and a normal request is answered."""
    port = free_ports(1)[0]
    text = _profile(tmp_path, "apache", port, extra="    threads_per_child: 8\n")
    session = StackSession(load_profile_text(text, tmp_path / "p.yaml"), run_dir=tmp_path / "run")
    stop = threading.Event()
    slow: list[socket.socket] = []

    def drip(s: socket.socket) -> None:
        try:
            s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n")
            while not stop.wait(0.5):
                s.sendall(b"X")
        except OSError:
            pass  # Apache closed it: that is the point

    try:
        session.start()
        slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(12)]
        threads = [threading.Thread(target=drip, args=(s,), daemon=True) for s in slow]
        for t in threads:
            t.start()
        start = time.monotonic()
        status, _head, body = raw_get(port, "/ok.txt", timeout=25.0)
        assert (status, body) == (200, b"public file\n")
        # Threads are taken first come, first served: the 4 slow clients beyond the 8 threads wait for
        # the first 8 to be cut off, so the request is answered after at most two header timeouts.
        assert time.monotonic() - start < 15.0
    finally:
        stop.set()
        for s in slow:
            s.close()
        session.close()


def test_environment_and_a_stray_gunicorn_conf_cannot_change_gunicorn(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """GUNICORN_CMD_ARGS=--daemon in the shell that runs stackpanel once left a detached gunicorn
    behind a node reported as failed; a gunicorn.conf.py in the app's directory was executed."""
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    marker = tmp_path / "conf-was-executed"
    (app_dir / "gunicorn.conf.py").write_text(f"open({str(marker)!r}, 'w').write('x')\ndaemon = True\n")
    monkeypatch.setenv("GUNICORN_CMD_ARGS", "--daemon --workers 7")
    monkeypatch.setenv("WEB_CONCURRENCY", "7")
    port = free_ports(1)[0]
    text = f"""\
version: 1
name: gunicorn env
nodes:
  app:
    kind: gunicorn
    port: {port}
    workers: 2
    app: {{module: stackpanel.apps.flask_demo:app, interface: wsgi, working_dir: app}}
    readiness_probe: {{http_get: {{path: /healthz}}}}
"""
    session = StackSession(load_profile_text(text, tmp_path / "p.yaml"), run_dir=tmp_path / "run")
    workers_seen = threading.Event()
    session.subscribe(lambda ev: workers_seen.set() if isinstance(ev, WorkersChanged) and ev.worker_pids else None)
    try:
        session.start()
        assert workers_seen.wait(10) or session.snapshot().node("app").worker_pids
        node = session.snapshot().node("app")
        assert node.pid is not None and alive_pids([node.pid]) == [node.pid]  # the supervised master serves
        assert len(node.worker_pids) == 2  # not the 7 the environment asked for
        assert not marker.exists()
        pids = [node.pid, *node.worker_pids]
    finally:
        session.close()
    assert alive_pids(pids) == []
