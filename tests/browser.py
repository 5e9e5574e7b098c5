"""Real clients for HTTPS tests: curl with an explicit CA, and Debian's headless Chromium.

Neither reads the machine's trust: curl gets ``--cacert`` only, Chromium runs with a temporary
HOME whose NSS database (``$HOME/.pki/nssdb``, what Chromium on Linux trusts besides its built-in
roots) holds the CA or not. Both raise with the client's own error text, so a test that expects
a certificate error can assert on it (e.g. ``net::ERR_CERT_AUTHORITY_INVALID``, curl exit 60).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

TIMEOUT = 60.0
NICKNAME = "stackpanel-test-ca"


class BrowserUnavailable(RuntimeError):
    """The client program is not installed; the message says which package to install."""


class CurlError(RuntimeError):
    def __init__(self, url: str, returncode: int, stderr: str):
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(f"curl {url} failed (exit {returncode}): {stderr.strip()}")


class ChromiumError(RuntimeError):
    def __init__(self, url: str, error: str, stderr: str):
        self.error = error  # e.g. "net::ERR_CERT_AUTHORITY_INVALID"
        self.stderr = stderr
        super().__init__(f"chromium could not load {url}: {error}")


def _need(program: str, package: str) -> str:
    path = shutil.which(program)
    if path is None:
        raise BrowserUnavailable(f"{program} not found: apt-get install {package}")
    return path


def curl_get(url: str, ca: Path | None, *, resolve: Sequence[str] = (), timeout: float = 20.0) -> tuple[int, str]:
    """GET ``url`` with real curl trusting only ``ca`` (None: curl's default store); ``(status, body)``.

    ``resolve`` takes curl ``--resolve HOST:PORT:ADDR`` entries. CurlError on any transport or
    verification failure (exit 60: the chain does not verify against ``ca``).
    """
    curl = _need("curl", "curl")
    with tempfile.NamedTemporaryFile(prefix="curl-body-") as body:
        argv = [curl, "-sS", "--noproxy", "*", "--max-time", str(timeout), "-o", body.name, "-w", "%{http_code}"]
        if ca is not None:
            argv += ["--cacert", str(ca)]
        for entry in resolve:
            argv += ["--resolve", entry]
        result = subprocess.run([*argv, url], capture_output=True, text=True, timeout=timeout + 10)
        if result.returncode != 0:
            raise CurlError(url, result.returncode, result.stderr)
        return int(result.stdout.strip() or 0), Path(body.name).read_text(errors="replace")


def nss_trust(home: Path, ca_pem: Path, nickname: str = NICKNAME) -> Path:
    """Make ``home/.pki/nssdb`` trust ``ca_pem`` for TLS (independent of the code under test)."""
    certutil = _need("certutil", "libnss3-tools")
    db = home / ".pki" / "nssdb"
    db.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not (db / "cert9.db").exists():
        subprocess.run([certutil, "-N", "--empty-password", "-d", f"sql:{db}"], check=True, capture_output=True,
                       timeout=TIMEOUT)
    subprocess.run([certutil, "-A", "-d", f"sql:{db}", "-t", "C,,", "-n", nickname, "-i", str(ca_pem)], check=True,
                   capture_output=True, timeout=TIMEOUT)
    return db


_FAILED = re.compile(r"Page load failed: (\S+)")


def chromium_load(url: str, ca_pem: Path | None, home: Path, *, extra_args: Sequence[str] = ()) -> str:
    """Load ``url`` in headless Chromium and return the DOM; ChromiumError with Chromium's net error.

    ``home`` becomes Chromium's HOME (its NSS database and profile live there); with ``ca_pem``
    the database is made to trust that CA first, with None it is used as it is (e.g. one that
    stackpanel's own trust steps prepared, or none at all: then only public roots are trusted).
    """
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise BrowserUnavailable("chromium not found: apt-get install chromium")
    home.mkdir(parents=True, exist_ok=True)
    if ca_pem is not None:
        nss_trust(home, ca_pem)
    argv = [chromium, "--headless", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
            "--disable-extensions", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--metrics-recording-only", f"--user-data-dir={home / 'chromium-profile'}"]
    if os.geteuid() == 0:
        argv.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
    argv += [*extra_args, "--dump-dom", url]
    env = {"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
           "DBUS_SESSION_BUS_ADDRESS": "disabled:", "XDG_CONFIG_HOME": str(home / ".config"),
           "XDG_CACHE_HOME": str(home / ".cache")}
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, env=env,
                                stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise ChromiumError(url, f"no answer in {TIMEOUT:.0f} s", str(e.stderr or "")) from e
    failed = _FAILED.search(result.stderr)
    if failed:
        raise ChromiumError(url, failed.group(1), result.stderr)
    if result.returncode != 0 or not result.stdout.strip():
        lines = [ln for ln in result.stderr.splitlines() if "dbus" not in ln.lower()]
        raise ChromiumError(url, f"exit {result.returncode}, {lines[-1] if lines else 'no DOM'}", result.stderr)
    return result.stdout
