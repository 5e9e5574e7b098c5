"""HTTPS at the edge with a certificate from the local CA, on nginx and Apache: curl verifies the
chain, HTTP/2 is negotiated, plain HTTP redirects, and headless Chromium loads the page with no
certificate error once the CA is trusted (and shows one before)."""
from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from stackpanel.core.profiles.loader import load_profile_text
from stackpanel.core.session import StackSession
from stackpanel.core.tls import ca_dir
from tests.browser import ChromiumError, chromium_load, curl_get
from tests.conftest import free_ports
from tests.integration.conftest import builtin

pytestmark = pytest.mark.integration


@pytest.fixture
def user_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The local CA lives in the user's data dir: a fresh one per test."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    return tmp_path / "data"


@pytest.fixture(params=["nginx", "apache"])
def tls_stack(request: pytest.FixtureRequest, tmp_path: Path, user_data: Path) -> Iterator[tuple[int, int]]:
    plain, secure, app = free_ports(3)
    text = f"""\
version: 1
name: tls {request.param}
nodes:
  edge:
    kind: {request.param}
    port: {plain}
    tls: {{port: {secure}, redirect: true}}
    server_names: [shop.test]
    routes: [{{path: /api, to: app}}]
  app:
    kind: uvicorn
    port: {app}
    app: {{module: stackpanel.apps.fastapi_demo:app}}
    readiness_probe: {{http_get: {{path: /healthz}}}}
"""
    session = StackSession(load_profile_text(text, tmp_path / "p.yaml"), run_dir=tmp_path / "run")
    try:
        session.start()
        yield plain, secure
    finally:
        session.close()


def test_https_with_a_verified_chain_http2_and_a_redirect(tls_stack: tuple[int, int]) -> None:
    plain, secure = tls_stack
    ca = ca_dir() / "ca.pem"
    status, body = curl_get(f"https://localhost:{secure}/api/hello", ca)
    assert status == 200 and "hello from stackpanel" in body
    assert curl_get(f"https://127.0.0.1:{secure}/api/hello", ca)[0] == 200
    assert curl_get(f"https://shop.test:{secure}/api/hello", ca, resolve=[f"shop.test:{secure}:127.0.0.1"])[0] == 200
    version = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_version}", "--cacert", str(ca),
                              f"https://localhost:{secure}/api/hello"], capture_output=True, text=True, timeout=20)
    assert version.stdout == "2"
    redirect = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}",
                               f"http://localhost:{plain}/api/hello?x=1"], capture_output=True, text=True, timeout=20)
    assert redirect.stdout == f"308 https://localhost:{secure}/api/hello?x=1"


def test_chromium_trusts_the_local_ca_and_only_then(tls_stack: tuple[int, int], tmp_path: Path) -> None:
    _plain, secure = tls_stack
    url = f"https://localhost:{secure}/api/hello"
    with pytest.raises(ChromiumError) as info:
        chromium_load(url, None, tmp_path / "untrusting")
    assert "ERR_CERT_AUTHORITY_INVALID" in str(info.value)
    assert "hello from stackpanel" in chromium_load(url, ca_dir() / "ca.pem", tmp_path / "trusting")


def test_builtin_tls_profile_serves_static_api_and_websocket_over_https(tmp_path: Path, user_data: Path) -> None:
    import ssl

    from websockets.sync.client import connect

    profile = builtin("nginx-tls-uvicorn")
    session = StackSession(profile, run_dir=tmp_path / "run")
    try:
        session.start()
        url = profile.browser_url
        assert url.startswith("https://")
        ca = ca_dir() / "ca.pem"
        status, body = curl_get(url, ca)
        assert status == 200 and "<html" in body.lower()
        assert curl_get(url + "api/hello", ca)[0] == 200
        context = ssl.create_default_context(cafile=str(ca))
        with connect(url.replace("https", "wss") + "ws/echo", ssl=context, open_timeout=10) as ws:
            ws.send("over tls")
            assert ws.recv(timeout=10) == "over tls"
    finally:
        session.close()


def test_load_through_the_https_entry(tmp_path: Path, user_data: Path) -> None:
    """The built-in generator speaks TLS to the local CA's leaf: load on a redirecting https entry
    measures the app, not 308 redirects."""
    from stackpanel.core.loadgen import LoadConfig, run_load

    profile = builtin("nginx-tls-uvicorn")
    session = StackSession(profile, run_dir=tmp_path / "run")
    try:
        session.start()
        result = run_load(LoadConfig(url=profile.browser_url + "api/hello", connections=4, requests=400,
                                     duration_s=60))
        assert result.requests_ok == 400 and sum(result.errors.values()) == 0
        assert result.responses == 400
    finally:
        session.close()
