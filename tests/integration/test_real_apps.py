"""Real third-party apps from PyPI behind the real servers, as users will meet stackpanel:

- a Django project made by ``django-admin startproject`` (admin login with CSRF and a session
  cookie, static files collected and served by the proxy), under gunicorn (WSGI) and uvicorn (ASGI);
- httpbin (a Flask app): headers as the app sees them, request bodies, streamed and gzipped answers;
- python-socketio's ASGI server: the Socket.IO protocol over a WebSocket, on two uvicorn workers.

Each runs through nginx and through Apache.
"""
from __future__ import annotations

import http.cookiejar
import json
import re
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.client import connect

from stackpanel.core.profiles.loader import load_profile_text
from stackpanel.core.session import StackSession
from tests.conftest import free_ports

pytestmark = pytest.mark.integration

PROXIES = ["nginx", "apache"]


def start(tmp: Path, text: str) -> StackSession:
    session = StackSession(load_profile_text(text, tmp / "profile.yaml"), run_dir=tmp / "run")
    session.start()
    return session


def opener() -> urllib.request.OpenerDirector:
    """A client that keeps cookies and does not follow redirects (the test looks at them)."""
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), NoRedirect)


def fetch(client: urllib.request.OpenerDirector, url: str, data: bytes | None = None,
          headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with client.open(req, timeout=20) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


# ----------------------------------------------------------------- Django


@pytest.fixture(scope="module")
def django_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``startproject``, then what its deployment checklist says: hosts, STATIC_ROOT, migrate,
    collectstatic, a superuser."""
    root = tmp_path_factory.mktemp("django")
    root.chmod(0o755)
    project = root / "site"
    project.mkdir()
    subprocess.run([sys.executable, "-m", "django", "startproject", "mysite", str(project)], check=True)
    settings = project / "mysite" / "settings.py"
    settings.write_text(settings.read_text()
                        + '\nALLOWED_HOSTS = ["localhost", "127.0.0.1"]\nSTATIC_ROOT = BASE_DIR / "collected"\n')
    env = {"DJANGO_SETTINGS_MODULE": "mysite.settings", "DJANGO_SUPERUSER_PASSWORD": "correct horse battery",
           "PATH": "/usr/bin:/bin"}
    manage = [sys.executable, "manage.py"]
    for args in (["migrate", "--noinput"], ["collectstatic", "--noinput"],
                 ["createsuperuser", "--noinput", "--username", "admin", "--email", "admin@example.com"]):
        subprocess.run(manage + args, cwd=project, env=env, check=True, capture_output=True)
    return project


def django_profile(proxy: str, server: str, ports: list[int], project: Path) -> str:
    module, interface = ("mysite.wsgi:application", "wsgi") if server == "gunicorn" else ("mysite.asgi:application",
                                                                                          "asgi")
    return f"""\
version: 1
name: django behind {proxy} and {server}
nodes:
  edge:
    kind: {proxy}
    port: {ports[0]}
    routes:
      - {{path: /static, static: {project / "collected"}}}
      - {{path: /, to: django}}
  django:
    kind: {server}
    app: {{module: {module}, interface: {interface}, working_dir: {project}}}
    port: {ports[1]}
    workers: 2
    readiness_probe: {{http_get: {{path: /admin/login/}}}}
"""


@pytest.fixture(scope="module", params=[("nginx", "gunicorn"), ("apache", "uvicorn")], ids="-".join)
def django_stack(request: pytest.FixtureRequest, django_project: Path,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    proxy, server = request.param
    ports = free_ports(2)
    session = start(tmp_path_factory.mktemp(f"django-{proxy}"), django_profile(proxy, server, ports, django_project))
    try:
        yield ports[0]
    finally:
        session.close()


def test_django_admin_login_with_csrf_and_session(django_stack: int) -> None:
    base = f"http://localhost:{django_stack}"
    client = opener()
    status, _headers, body = fetch(client, f"{base}/admin/login/?next=/admin/")
    assert status == 200 and b"Django administration" in body
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', body)
    assert token is not None
    form = urllib.parse.urlencode({"csrfmiddlewaretoken": token.group(1).decode(), "username": "admin",
                                   "password": "correct horse battery", "next": "/admin/"}).encode()
    # Django checks Origin against the Host it sees: the proxy must pass the client's Host through.
    status, headers, _ = fetch(client, f"{base}/admin/login/?next=/admin/", data=form,
                               headers={"Origin": base, "Referer": f"{base}/admin/login/"})
    assert status == 302 and headers["location"] == "/admin/"
    status, _, body = fetch(client, f"{base}/admin/")
    assert status == 200 and b"Site administration" in body


def test_django_static_files_come_from_the_proxy(django_stack: int) -> None:
    status, headers, body = fetch(opener(), f"http://localhost:{django_stack}/static/admin/css/base.css")
    assert status == 200 and b"--primary" in body
    assert "text/css" in headers["content-type"]
    status, _, _ = fetch(opener(), f"http://localhost:{django_stack}/static/../mysite/settings.py")
    assert status in (400, 404)


# ----------------------------------------------------------------- httpbin (Flask)


@pytest.fixture(scope="module", params=PROXIES)
def httpbin_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    ports = free_ports(2)
    text = f"""\
version: 1
name: httpbin behind {request.param}
nodes:
  edge:
    kind: {request.param}
    port: {ports[0]}
    routes: [{{path: /, to: httpbin}}]
  httpbin:
    kind: gunicorn
    port: {ports[1]}
    workers: 2
    app: {{module: "httpbin:app", interface: wsgi}}
    readiness_probe: {{http_get: {{path: /status/200}}}}
"""
    session = start(tmp_path_factory.mktemp(f"httpbin-{request.param}"), text)
    try:
        yield ports[0]
    finally:
        session.close()


def test_httpbin_sees_the_clients_host_and_forwarding_headers(httpbin_stack: int) -> None:
    base = f"http://localhost:{httpbin_stack}"
    status, _, body = fetch(opener(), f"{base}/get?x=1")
    assert status == 200
    seen = json.loads(body)
    assert seen["args"] == {"x": "1"} and seen["origin"].split(",")[0].strip() == "127.0.0.1"
    # httpbin hides proxy headers unless asked (show_env)
    status, headers, body = fetch(opener(), f"{base}/headers?show_env=1", headers={"X-Request-ID": "real-app-1"})
    assert status == 200
    sent = json.loads(body)["headers"]
    assert sent["Host"] == f"localhost:{httpbin_stack}"
    assert sent["X-Forwarded-For"].split(",")[0].strip() == "127.0.0.1"
    assert sent["X-Forwarded-Proto"] == "http"
    assert sent["X-Request-Id"] == "real-app-1" and headers["x-request-id"] == "real-app-1"


def test_httpbin_bodies_streams_and_gzip(httpbin_stack: int) -> None:
    base = f"http://localhost:{httpbin_stack}"
    payload = json.dumps({"text": "ü" * 50_000}).encode()
    status, _, body = fetch(opener(), f"{base}/post", data=payload, headers={"Content-Type": "application/json"})
    assert status == 200 and json.loads(body)["json"] == {"text": "ü" * 50_000}
    status, _, body = fetch(opener(), f"{base}/stream/5")
    assert status == 200 and [json.loads(line)["id"] for line in body.splitlines()] == [0, 1, 2, 3, 4]
    status, headers, _ = fetch(opener(), f"{base}/gzip")
    assert status == 200 and headers["content-encoding"] == "gzip"
    assert fetch(opener(), f"{base}/status/418")[0] == 418


# ----------------------------------------------------------------- python-socketio (ASGI + WebSocket)

SOCKETIO_APP = '''\
import socketio

sio = socketio.AsyncServer(async_mode="asgi")


@sio.on("echo")
async def echo(sid, data):
    return {"echo": data, "sid": sid}


app = socketio.ASGIApp(sio)
'''


@pytest.fixture(scope="module", params=PROXIES)
def socketio_stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    tmp = tmp_path_factory.mktemp(f"socketio-{request.param}")
    (tmp / "chat").mkdir()
    (tmp / "chat" / "sioapp.py").write_text(SOCKETIO_APP)
    ports = free_ports(2)
    text = f"""\
version: 1
name: socket.io behind {request.param}
nodes:
  edge:
    kind: {request.param}
    port: {ports[0]}
    routes: [{{path: /socket.io, to: chat}}]
  chat:
    kind: uvicorn
    port: {ports[1]}
    workers: 2
    app: {{module: "sioapp:app", working_dir: {tmp / "chat"}}}
    readiness_probe: {{http_get: {{path: "/socket.io/?EIO=4&transport=polling"}}}}
"""
    session = start(tmp, text)
    try:
        yield ports[0]
    finally:
        session.close()


def test_socketio_speaks_its_protocol_over_a_websocket(socketio_stack: int) -> None:
    url = f"ws://localhost:{socketio_stack}/socket.io/?EIO=4&transport=websocket"
    for round_ in range(3):  # each connection may land on either worker
        with connect(url, open_timeout=10) as ws:
            opened = ws.recv(timeout=10)
            assert isinstance(opened, str) and opened.startswith("0")
            assert "websocket" not in json.loads(opened[1:])["upgrades"]  # already on one
            ws.send("40")  # Socket.IO connect to the default namespace
            connected = ws.recv(timeout=10)
            assert isinstance(connected, str) and connected.startswith("40")
            sid = json.loads(connected[2:])["sid"]
            ws.send(f'42{round_}["echo","ü{round_}"]')  # an event with an ack id
            ack = ws.recv(timeout=10)
            assert isinstance(ack, str) and ack.startswith(f"43{round_}[")
            assert json.loads(ack[3:]) == [{"echo": f"ü{round_}", "sid": sid}]
