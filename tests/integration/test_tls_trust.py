"""Local HTTPS end to end: a real nginx serves a leaf from ``issue_leaf``; real curl and headless
Chromium verify it against stackpanel's CA, and refuse it without that trust or outside the CA's
name constraints (so these tests can fail)."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
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
DECLARED = ["shop.internal", "shop.test", "localhost"]  # names a profile may declare beyond loopback
PAGE = f"<html><head><title>ok</title></head><body><p id=marker>{MARKER}</p></body></html>"


@dataclass(frozen=True)
class Material:
    leaf: LeafCert  # from issue_leaf, for NAMES
    ca_directory: Path
    forged_cert: Path  # a leaf for example.com signed by the same CA: outside its constraints
    forged_key: Path
    declared: LeafCert  # from a second CA, widened for the private names a profile declares


@dataclass(frozen=True)
class TlsServer:
    kind: str
    port: int  # serves material.leaf
    material: Material

    @property
    def ca(self) -> Path:
        return self.material.leaf.ca


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
            text = log.read_text(errors="replace") if log.exists() else ""
            raise RuntimeError(f"server exited with {proc.returncode}: {text}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server did not listen on {port} within {timeout} s")


@contextmanager
def _running(argv: list[str], ports: list[int], log: Path) -> Iterator[None]:
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL)
    try:
        for port in ports:
            _wait_for_port(port, proc, log)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> Material:
    base = tmp_path_factory.mktemp("tls")
    ca_directory = base / "ca"
    ensure_ca(ca_directory)
    leaf = issue_leaf(NAMES, base / "run", ca_directory=ca_directory)
    declared = issue_leaf(DECLARED, base / "run-declared", ca_directory=base / "ca-declared")
    return Material(leaf, ca_directory, *_forge(ca_directory, base / "forged"), declared)


@pytest.fixture(scope="module")
def nginx(material: Material, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TlsServer, int, int]]:
    """nginx serving the real leaf, the forged one and the declared-names one, each on its own port."""
    leaf = material.leaf
    port, forged_port, declared_port = free_ports(3)
    prefix = tmp_path_factory.mktemp("nginx")
    (prefix / "logs").mkdir()
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
        location / {{ default_type text/html; return 200 "{PAGE}"; }}
    }}
    server {{
        listen 127.0.0.1:{forged_port} ssl;
        server_name example.com;
        ssl_certificate {material.forged_cert};
        ssl_certificate_key {material.forged_key};
        location / {{ default_type text/html; return 200 "{PAGE}"; }}
    }}
    server {{
        listen 127.0.0.1:{declared_port} ssl;
        server_name shop.internal shop.test;
        ssl_certificate {material.declared.cert};
        ssl_certificate_key {material.declared.key};
        location / {{ default_type text/html; return 200 "{PAGE}"; }}
    }}
}}
""")
    check = subprocess.run(["nginx", "-t", "-p", str(prefix), "-c", str(conf)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    with _running(["nginx", "-p", str(prefix), "-c", str(conf)], [port, forged_port, declared_port],
                  prefix / "logs" / "error.log"):
        yield TlsServer("nginx", port, material), forged_port, declared_port


@pytest.fixture(scope="module")
def apache(material: Material, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    """Apache (mod_ssl, HTTP/2 where mod_http2 is there) serving the leaf's full chain file."""
    apache2 = shutil.which("apache2") or shutil.which("httpd")
    assert apache2, "apache2 is needed: apt-get install apache2"
    modules = next((d for d in (Path("/usr/lib/apache2/modules"), Path("/usr/lib64/httpd/modules"))
                    if (d / "mod_ssl.so").is_file()), None)
    assert modules is not None, "mod_ssl not found (Debian: apache2; RHEL: mod_ssl)"
    prefix = tmp_path_factory.mktemp("apache")
    # The document root must be readable by the account Apache's children switch to as root;
    # pytest's tmp directories are 0700, so the page lives in a world-readable directory of its own.
    docroot = Path(tempfile.mkdtemp(prefix="stackpanel-tls-docroot-"))
    docroot.chmod(0o755)
    (docroot / "index.html").write_text(PAGE)
    (docroot / "index.html").chmod(0o644)
    port = free_ports(1)[0]
    loads = ["mpm_event", "authz_core", "mime", "dir", "ssl", "socache_shmcb"]
    http2 = (modules / "mod_http2.so").is_file()
    if http2:
        loads.append("http2")
    user = "User nobody\nGroup nogroup\n" if os.geteuid() == 0 else ""
    leaf = material.leaf
    conf = prefix / "httpd.conf"
    conf.write_text(f"""
ServerRoot "{prefix}"
ServerName localhost
Listen 127.0.0.1:{port}
Listen [::1]:{port}
PidFile "{prefix}/httpd.pid"
DefaultRuntimeDir "{prefix}"
ErrorLog "{prefix}/error.log"
LogLevel warn
{"".join(f'LoadModule {m}_module "{modules}/mod_{m}.so"{chr(10)}' for m in loads)}
{user}
StartServers 1
ServerLimit 1
ThreadsPerChild 8
MaxRequestWorkers 8
TypesConfig /dev/null
AddType text/html .html
DirectoryIndex index.html
{"Protocols h2 http/1.1" if http2 else ""}
SSLSessionCache "shmcb:{prefix}/ssl_scache(512000)"
<VirtualHost *:{port}>
    ServerName localhost
    ServerAlias app.localhost 127.0.0.1 [::1]
    SSLEngine on
    SSLCertificateFile "{leaf.cert}"
    SSLCertificateKeyFile "{leaf.key}"
    DocumentRoot "{docroot}"
    <Directory "{docroot}">
        Require all granted
    </Directory>
</VirtualHost>
""")
    argv = [apache2, "-f", str(conf), "-DFOREGROUND"]
    check = subprocess.run([apache2, "-f", str(conf), "-t"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    try:
        with _running(argv, [port], prefix / "error.log"):
            yield TlsServer("apache", port, material)
    finally:
        shutil.rmtree(docroot, ignore_errors=True)


@pytest.fixture(params=["nginx", "apache"])
def server(request: pytest.FixtureRequest) -> TlsServer:
    if request.param == "nginx":
        return request.getfixturevalue("nginx")[0]
    return request.getfixturevalue("apache")


# ------------------------------------------------------------------------------------------ curl

@pytest.mark.parametrize("host", ["localhost", "app.localhost", "127.0.0.1", "[::1]"])
def test_curl_verifies_the_chain_against_the_ca(server: TlsServer, host: str) -> None:
    resolve = [f"app.localhost:{server.port}:127.0.0.1"] if host == "app.localhost" else []
    status, body = curl_get(f"https://{host}:{server.port}/", server.ca, resolve=resolve)
    assert status == 200 and MARKER in body


def test_curl_refuses_the_leaf_without_the_ca(server: TlsServer, tmp_path: Path) -> None:
    other_ca, _ = ensure_ca(tmp_path / "other-ca")
    with pytest.raises(CurlError) as e:
        curl_get(f"https://localhost:{server.port}/", other_ca)
    assert e.value.returncode == 60  # peer certificate cannot be authenticated with the given CA


def test_curl_refuses_a_leaf_outside_the_name_constraints(nginx: tuple[TlsServer, int, int]) -> None:
    server, forged_port, _ = nginx
    url = f"https://example.com:{forged_port}/"
    with pytest.raises(CurlError) as e:
        curl_get(url, server.ca, resolve=[f"example.com:{forged_port}:127.0.0.1"])
    assert e.value.returncode == 60
    assert "permitted subtree violation" in e.value.stderr  # OpenSSL enforces NameConstraints


# -------------------------------------------------------------------------------------- chromium

def test_chromium_trusting_the_ca_loads_the_page_without_a_certificate_error(server: TlsServer,
                                                                           tmp_path: Path) -> None:
    dom = chromium_load(f"https://localhost:{server.port}/", server.ca, tmp_path / "home")
    assert f'<p id="marker">{MARKER}</p>' in dom


def test_chromium_without_trust_shows_the_certificate_error(server: TlsServer, tmp_path: Path) -> None:
    with pytest.raises(ChromiumError) as e:
        chromium_load(f"https://localhost:{server.port}/", None, tmp_path / "home")
    assert e.value.error == "net::ERR_CERT_AUTHORITY_INVALID"


def test_chromium_refuses_a_leaf_outside_the_name_constraints(nginx: tuple[TlsServer, int, int],
                                                              tmp_path: Path) -> None:
    """Even trusting the CA, Chromium refuses what a stolen key could mint for a real site."""
    server, forged_port, _ = nginx
    with pytest.raises(ChromiumError) as e:
        chromium_load(f"https://example.com:{forged_port}/", server.ca, tmp_path / "home",
                      extra_args=["--host-resolver-rules=MAP example.com 127.0.0.1"])
    # the control (same CA, same trust, a permitted name) loads in the test above; Chromium reports a
    # name-constraint violation as ERR_CERT_INVALID, not as an unknown issuer
    assert e.value.error == "net::ERR_CERT_INVALID", e.value.stderr


def test_stackpanel_trust_steps_make_chromium_trust_and_remove_undoes_it(nginx: tuple[TlsServer, int, int],
                                                                         tmp_path: Path) -> None:
    server, home = nginx[0], tmp_path / "home"
    url = f"https://app.localhost:{server.port}/"  # Chromium resolves *.localhost to loopback itself
    apply_trust(trust_plan(ca_directory=server.material.ca_directory, home=home, system=None))
    assert trust_status(server.material.ca_directory, home=home, system=None).trusted
    assert MARKER in chromium_load(url, None, home)
    apply_trust(trust_plan(remove=True, ca_directory=server.material.ca_directory, home=home, system=None))
    with pytest.raises(ChromiumError, match="ERR_CERT_AUTHORITY_INVALID"):
        chromium_load(url, None, home)


def test_names_a_profile_declares_load_with_the_widened_ca(nginx: tuple[TlsServer, int, int], tmp_path: Path) -> None:
    """shop.internal made issue_leaf widen the CA's constraints; curl and Chromium accept the result."""
    server, _, port = nginx
    declared = server.material.declared
    assert declared.names == tuple(DECLARED)
    for host in ("shop.internal", "shop.test"):
        status, body = curl_get(f"https://{host}:{port}/", declared.ca, resolve=[f"{host}:{port}:127.0.0.1"])
        assert status == 200 and MARKER in body
    rules = "--host-resolver-rules=MAP shop.internal 127.0.0.1, MAP shop.test 127.0.0.1"
    assert MARKER in chromium_load(f"https://shop.internal:{port}/", declared.ca, tmp_path / "home",
                                   extra_args=[rules])
