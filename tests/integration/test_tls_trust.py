"""Local HTTPS end to end: a real nginx serves a leaf from ``issue_leaf``; real curl and headless
Chromium verify it against stackpanel's CA, and refuse it without that trust or outside the CA's
name constraints (so these tests can fail)."""
from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from stackpanel.core.tls import LeafCert, apply_trust, ensure_ca, issue_leaf, trust_plan, trust_status
from stackpanel.core.tls.ca import normalize_name, sign_leaf
from tests.browser import ChromiumError, CurlError, chromium_load, curl_get
from tests.conftest import free_ports

pytestmark = pytest.mark.integration

MARKER = "stackpanel-tls-ok"
NAMES = ["localhost", "app.localhost", "127.0.0.1", "::1"]


@dataclass(frozen=True)
class TlsServer:
    port: int  # the leaf from issue_leaf, for NAMES
    forged_port: int  # a leaf for example.com signed by the same CA: outside its constraints
    leaf: LeafCert
    ca_directory: Path


def _forge(ca_directory: Path, out: Path) -> tuple[Path, Path]:
    """What a stolen CA key could mint for a real site."""
    ca = x509.load_pem_x509_certificate((ca_directory / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((ca_directory / "ca-key.pem").read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = sign_leaf(ca, ca_key, [normalize_name("example.com")], key, ca.not_valid_before_utc, 30)
    out.mkdir(parents=True)
    (out / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM)
                                   + ca.public_bytes(serialization.Encoding.PEM))
    (out / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
    (out / "key.pem").chmod(0o600)
    return out / "cert.pem", out / "key.pem"


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nginx exited with {proc.returncode}: {log.read_text(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nginx did not listen on {port} within {timeout} s")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    base = tmp_path_factory.mktemp("tls")
    ca_directory = base / "ca"
    ensure_ca(ca_directory)
    leaf = issue_leaf(NAMES, base / "run", ca_directory=ca_directory)
    forged_cert, forged_key = _forge(ca_directory, base / "forged")
    port, forged_port = free_ports(2)
    prefix = base / "nginx"
    (prefix / "logs").mkdir(parents=True)
    body = f"<html><head><title>ok</title></head><body><p id=marker>{MARKER}</p></body></html>"
    conf = prefix / "nginx.conf"
    conf.write_text(f"""
daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/tmp; proxy_temp_path {prefix}/tmp; fastcgi_temp_path {prefix}/tmp;
    uwsgi_temp_path {prefix}/tmp; scgi_temp_path {prefix}/tmp;
    ssl_protocols TLSv1.2 TLSv1.3;
    server {{
        listen 127.0.0.1:{port} ssl http2;
        listen [::1]:{port} ssl http2;
        server_name localhost app.localhost;
        ssl_certificate {leaf.cert};
        ssl_certificate_key {leaf.key};
        location / {{ default_type text/html; return 200 "{body}"; }}
    }}
    server {{
        listen 127.0.0.1:{forged_port} ssl;
        server_name example.com;
        ssl_certificate {forged_cert};
        ssl_certificate_key {forged_key};
        location / {{ default_type text/html; return 200 "{body}"; }}
    }}
}}
""")
    check = subprocess.run(["nginx", "-t", "-p", str(prefix), "-c", str(conf)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen(["nginx", "-p", str(prefix), "-c", str(conf)], stdin=subprocess.DEVNULL)
    try:
        _wait_for_port(port, proc, prefix / "logs" / "error.log")
        _wait_for_port(forged_port, proc, prefix / "logs" / "error.log")
        yield TlsServer(port, forged_port, leaf, ca_directory)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------------------------------ curl

@pytest.mark.parametrize("host", ["localhost", "app.localhost", "127.0.0.1", "[::1]"])
def test_curl_verifies_the_chain_against_the_ca(server: TlsServer, host: str) -> None:
    resolve = [f"app.localhost:{server.port}:127.0.0.1"] if host == "app.localhost" else []
    status, body = curl_get(f"https://{host}:{server.port}/", server.leaf.ca, resolve=resolve)
    assert status == 200 and MARKER in body


def test_curl_refuses_the_leaf_without_the_ca(server: TlsServer, tmp_path: Path) -> None:
    other_ca, _ = ensure_ca(tmp_path / "other-ca")
    with pytest.raises(CurlError) as e:
        curl_get(f"https://localhost:{server.port}/", other_ca)
    assert e.value.returncode == 60  # peer certificate cannot be authenticated with the given CA


def test_curl_refuses_a_leaf_outside_the_name_constraints(server: TlsServer) -> None:
    url = f"https://example.com:{server.forged_port}/"
    with pytest.raises(CurlError) as e:
        curl_get(url, server.leaf.ca, resolve=[f"example.com:{server.forged_port}:127.0.0.1"])
    assert e.value.returncode == 60
    assert "permitted subtree violation" in e.value.stderr  # OpenSSL enforces NameConstraints


# -------------------------------------------------------------------------------------- chromium

def test_chromium_trusting_the_ca_loads_the_page_without_a_certificate_error(server: TlsServer,
                                                                           tmp_path: Path) -> None:
    dom = chromium_load(f"https://localhost:{server.port}/", server.leaf.ca, tmp_path / "home")
    assert f'<p id="marker">{MARKER}</p>' in dom


def test_chromium_without_trust_shows_the_certificate_error(server: TlsServer, tmp_path: Path) -> None:
    with pytest.raises(ChromiumError) as e:
        chromium_load(f"https://localhost:{server.port}/", None, tmp_path / "home")
    assert e.value.error == "net::ERR_CERT_AUTHORITY_INVALID"


def test_chromium_refuses_a_leaf_outside_the_name_constraints(server: TlsServer, tmp_path: Path) -> None:
    """Even trusting the CA, Chromium refuses what a stolen key could mint for a real site."""
    with pytest.raises(ChromiumError) as e:
        chromium_load(f"https://example.com:{server.forged_port}/", server.leaf.ca, tmp_path / "home",
                      extra_args=["--host-resolver-rules=MAP example.com 127.0.0.1"])
    # the control (same CA, same trust, a permitted name) loads in the test above; Chromium reports a
    # name-constraint violation as ERR_CERT_INVALID, not as an unknown issuer
    assert e.value.error == "net::ERR_CERT_INVALID", e.value.stderr


def test_stackpanel_trust_steps_make_chromium_trust_and_remove_undoes_it(server: TlsServer, tmp_path: Path) -> None:
    home = tmp_path / "home"
    url = f"https://app.localhost:{server.port}/"  # Chromium resolves *.localhost to loopback itself
    apply_trust(trust_plan(ca_directory=server.ca_directory, home=home, system=None))
    assert trust_status(server.ca_directory, home=home, system=None).trusted
    assert MARKER in chromium_load(url, None, home)
    apply_trust(trust_plan(remove=True, ca_directory=server.ca_directory, home=home, system=None))
    with pytest.raises(ChromiumError, match="ERR_CERT_AUTHORITY_INVALID"):
        chromium_load(url, None, home)
