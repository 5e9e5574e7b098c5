"""Where the local CA is trusted, and the exact, reversible steps that install or remove it.

Stores:

* **the system store** (curl, wget, Python with ``truststore``, Chrome on some distributions):
  Debian/Ubuntu copy to ``/usr/local/share/ca-certificates/stackpanel-<user>.crt`` and run
  ``update-ca-certificates``; RHEL/Fedora copy to ``/etc/pki/ca-trust/source/anchors/`` and run
  ``update-ca-trust extract``; macOS ``security add-trusted-cert`` into the System keychain
  (written from Apple's documentation, not tested here).
* **NSS databases**, which Chromium and Firefox read instead of the system store on Linux:
  Chromium's ``~/.pki/nssdb`` (made with ``certutil -N --empty-password`` when missing) and each
  Firefox profile's ``cert9.db`` (``~/.mozilla/firefox/*/``, also the snap and flatpak places),
  with ``certutil -A -t C,, -n stackpanel-<user>``.

:func:`trust_plan` says exactly what would change (for asking first), :func:`apply_trust` does it;
a plan made with ``remove=True`` undoes every step. Paths and commands are injectable
(``home``, ``system``) so tests run the real ``certutil`` and ``update-ca-certificates`` against
temporary directories.
"""
from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from stackpanel.core.tls.ca import (
    CA_FILE,
    TlsError,
    _user,
    ca_common_name,
    ca_dir,
    ensure_ca,
    fingerprint,
    load_ca,
)

log = logging.getLogger("stackpanel.tls")

COMMAND_TIMEOUT = 60.0
FIX_COMMAND = "stackpanel trust"

_INSTALL_HINTS = {
    "certutil": "certutil not found: sudo apt-get install libnss3-tools "
                "(Fedora/RHEL: sudo dnf install nss-tools; macOS: brew install nss)",
    "update-ca-certificates": "update-ca-certificates not found: sudo apt-get install ca-certificates",
    "update-ca-trust": "update-ca-trust not found: sudo dnf install ca-certificates",
    "security": "the macOS `security` tool is not on PATH (it ships with macOS in /usr/bin)",
}


class TrustError(TlsError):
    """Installing or removing trust failed; the message says what to run or install.

    ``commands``: when root is needed, the exact shell commands (with sudo) a person can copy.
    """

    def __init__(self, message: str, commands: Sequence[str] = ()):
        super().__init__(message)
        self.commands = tuple(commands)


def _safe_user() -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", _user()) or "user"


def nss_nickname() -> str:
    return f"stackpanel-{_safe_user()}"


# ----------------------------------------------------------------------------------- the stores

@dataclass(frozen=True)
class SystemStore:
    """The operating system's trust store: where the CA file goes and what rebuilds the store."""

    kind: Literal["debian", "rhel", "macos"]
    anchor: Path  # Debian/RHEL: the CA file we own; macOS: the keychain
    update: tuple[str, ...] = ()  # Debian/RHEL: rebuilds the store after a copy or a delete
    bundle: Path | None = None  # the file the update writes (read to tell whether the CA is in)
    needs_root: bool = True  # the real stores do; a private one (tests) does not

    @classmethod
    def debian(cls, root: Path | None = None, distro_cas: int = 3) -> SystemStore:
        """Debian/Ubuntu. ``root`` makes a private store under that directory (tests): the real
        ``update-ca-certificates`` builds it from the first ``distro_cas`` CAs of the distribution's
        list (all 140 take ~4 s a run) plus what stackpanel copies in."""
        name = f"stackpanel-{_safe_user()}.crt"
        if root is None:
            return cls("debian", Path("/usr/local/share/ca-certificates") / name, ("update-ca-certificates",),
                       Path("/etc/ssl/certs/ca-certificates.crt"))
        local, etc, hooks = root / "local", root / "etc-ssl-certs", root / "hooks"
        for d in (local, etc, hooks):
            d.mkdir(parents=True, exist_ok=True)
        try:
            listed = [ln for ln in Path("/etc/ca-certificates.conf").read_text().splitlines()
                      if ln and ln[0] not in "#!"]
        except OSError:
            listed = []
        conf = root / "ca-certificates.conf"
        conf.write_text("".join(f"{ln}\n" for ln in listed[:distro_cas]))
        update = ("update-ca-certificates", "--certsconf", str(conf), "--localcertsdir", str(local),
                  "--etccertsdir", str(etc), "--hooksdir", str(hooks))
        return cls("debian", local / name, update, etc / "ca-certificates.crt", needs_root=False)

    @classmethod
    def rhel(cls) -> SystemStore:
        return cls("rhel", Path("/etc/pki/ca-trust/source/anchors") / f"stackpanel-{_safe_user()}.pem",
                   ("update-ca-trust", "extract"), Path("/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem"))

    @classmethod
    def macos(cls) -> SystemStore:
        return cls("macos", Path("/Library/Keychains/System.keychain"))

    @property
    def label(self) -> str:
        return {"debian": "system store (Debian/Ubuntu)", "rhel": "system store (RHEL/Fedora)",
                "macos": "system keychain (macOS)"}[self.kind]

    @property
    def remove_update(self) -> tuple[str, ...]:
        """Debian's update only drops the links of a removed CA with --fresh (else they dangle)."""
        return (*self.update, "--fresh") if self.kind == "debian" else self.update


def detect_system_store() -> SystemStore | None:
    """The store of the system this runs on, or None when stackpanel does not know it."""
    if sys.platform == "darwin":
        return SystemStore.macos()
    if shutil.which("update-ca-certificates") or Path("/usr/local/share/ca-certificates").is_dir():
        return SystemStore.debian()
    if shutil.which("update-ca-trust") or Path("/etc/pki/ca-trust/source/anchors").is_dir():
        return SystemStore.rhel()
    return None


@dataclass(frozen=True)
class NssDb:
    """One NSS certificate database a browser reads."""

    path: Path
    browser: str  # "Chromium", "Firefox (profile abc.default-release)"
    create: bool = False  # made when missing (Chromium's shared db); Firefox makes its own

    @property
    def exists(self) -> bool:
        return (self.path / "cert9.db").is_file()

    @property
    def spec(self) -> str:
        return f"sql:{self.path}"


_FIREFOX_ROOTS = (".mozilla/firefox", "snap/firefox/common/.mozilla/firefox",
                  ".var/app/org.mozilla.firefox/.mozilla/firefox")


def nss_dbs(home: Path | None = None) -> list[NssDb]:
    """Chromium's ``~/.pki/nssdb`` (always listed: it is created when missing) and every Firefox profile db."""
    home = Path.home() if home is None else home
    dbs = [NssDb(home / ".pki" / "nssdb", "Chromium", create=True)]
    snap_chromium = home / "snap" / "chromium" / "current" / ".pki" / "nssdb"
    if (snap_chromium / "cert9.db").is_file():
        dbs.append(NssDb(snap_chromium, "Chromium (snap)"))
    for root in _FIREFOX_ROOTS:
        for db in sorted((home / root).glob("*/cert9.db")):
            dbs.append(NssDb(db.parent, f"Firefox (profile {db.parent.name})"))
    return dbs


# ------------------------------------------------------------------------------------- the plan

Action = Literal["copy", "delete", "mkdir", "run"]


@dataclass(frozen=True)
class TrustStep:
    """One change to one store, said in words and as the equivalent shell command."""

    store: str  # "system store (Debian/Ubuntu)", "Chromium", "Firefox (profile x)"
    action: Action
    summary: str  # what changes, one sentence
    argv: tuple[str, ...] = ()  # run
    source: Path | None = None  # copy
    target: Path | None = None  # copy, delete, mkdir
    needs_root: bool = False

    @property
    def shell(self) -> str:
        """The command a person would type for this step (with sudo when it needs root)."""
        sudo = "sudo " if self.needs_root and os.geteuid() != 0 else ""
        if self.action == "copy":
            return f"{sudo}install -m 0644 {shlex.quote(str(self.source))} {shlex.quote(str(self.target))}"
        if self.action == "delete":
            return f"{sudo}rm -f {shlex.quote(str(self.target))}"
        if self.action == "mkdir":
            return f"{sudo}mkdir -p -m 0700 {shlex.quote(str(self.target))}"
        return sudo + shlex.join(self.argv)

    def __str__(self) -> str:
        return f"{self.summary}\n    $ {self.shell}"


def _certutil(*args: str) -> subprocess.CompletedProcess[str] | None:
    if shutil.which("certutil") is None:
        return None
    try:
        return subprocess.run(["certutil", *args], capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return None


def _nss_der(db: NssDb) -> list[bytes] | None:
    """DER of every cert under our nickname in ``db``; None when certutil cannot tell."""
    if not db.exists:
        return []
    result = _certutil("-L", "-d", db.spec, "-n", nss_nickname(), "-a")
    if result is None:
        return None
    if result.returncode != 0:
        return []
    pems = re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", result.stdout, re.S)
    return [x509.load_pem_x509_certificate(p.encode()).public_bytes(serialization.Encoding.DER) for p in pems]


def _nss_trusted_for_tls(db: NssDb) -> bool:
    result = _certutil("-L", "-d", db.spec)
    if result is None or result.returncode != 0:
        return False
    for line in result.stdout.splitlines():
        m = re.match(r"^(.*\S)\s+(\S*),(\S*),(\S*)\s*$", line)
        if m and m.group(1) == nss_nickname():
            return "C" in m.group(2)
    return False


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _file_der(path: Path) -> bytes | None:
    try:
        return _der(x509.load_pem_x509_certificate(path.read_bytes()))
    except (OSError, ValueError):
        return None


def _bundle_has(bundle: Path | None, cert: x509.Certificate) -> bool:
    if bundle is None:
        return True
    try:
        text = bundle.read_text(errors="replace")
    except OSError:
        return False
    pem = cert.public_bytes(serialization.Encoding.PEM).decode().strip()
    return pem in text


def _macos_has(cert: x509.Certificate) -> bool:
    try:
        result = subprocess.run(["security", "find-certificate", "-a", "-Z", "-c", ca_common_name(),
                                 str(SystemStore.macos().anchor)], capture_output=True, text=True,
                                timeout=COMMAND_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return fingerprint(cert).replace(":", "") in result.stdout.upper()


SystemArg = SystemStore | None | Literal["auto"]


def _system(system: SystemArg) -> SystemStore | None:
    return detect_system_store() if system == "auto" else system


def _system_steps(store: SystemStore, ca_pem: Path, cert: x509.Certificate | None, remove: bool) -> list[TrustStep]:
    root = store.needs_root
    if store.kind == "macos":  # from Apple's `security` manual; not tested here
        if remove:
            if cert is None or not _macos_has(cert):
                return []
            return [TrustStep(store.label, "run", "remove the stackpanel CA's trust setting from macOS",
                              ("security", "remove-trusted-cert", "-d", str(ca_pem)), needs_root=True),
                    TrustStep(store.label, "run", f"delete the stackpanel CA from {store.anchor}",
                              ("security", "delete-certificate", "-c", ca_common_name(), str(store.anchor)),
                              needs_root=True)]
        if cert is not None and _macos_has(cert):
            return []
        return [TrustStep(store.label, "run", f"add the stackpanel CA to {store.anchor}, trusted for TLS",
                          ("security", "add-trusted-cert", "-d", "-r", "trustRoot", "-k", str(store.anchor),
                           str(ca_pem)), needs_root=True)]
    if remove:
        if not store.anchor.exists():
            return []
        return [TrustStep(store.label, "delete", f"delete {store.anchor}", target=store.anchor, needs_root=root),
                TrustStep(store.label, "run", "rebuild the system CA bundle without it", store.remove_update,
                          needs_root=root)]
    current = cert is not None and _file_der(store.anchor) == _der(cert)
    if cert is not None and current and _bundle_has(store.bundle, cert):
        return []
    steps = [] if current else [
        TrustStep(store.label, "copy", f"copy the stackpanel CA to {store.anchor}", source=ca_pem,
                  target=store.anchor, needs_root=root)]
    steps.append(TrustStep(store.label, "run", "rebuild the system CA bundle with it", store.update, needs_root=root))
    return steps


def _nss_steps(db: NssDb, ca_pem: Path, cert: x509.Certificate | None, remove: bool) -> list[TrustStep]:
    nick = nss_nickname()
    present = _nss_der(db)
    if remove:
        if present == [] or not db.exists:
            return []
        return [TrustStep(db.browser, "run", f"delete the certificate {nick!r} from {db.path}",
                          ("certutil", "-D", "-d", db.spec, "-n", nick))
                for _ in range(max(1, len(present or ())))]
    steps: list[TrustStep] = []
    if not db.exists:
        if not db.create:
            return []
        if not db.path.is_dir():
            steps.append(TrustStep(db.browser, "mkdir", f"create the directory {db.path}", target=db.path))
        steps.append(TrustStep(db.browser, "run", f"create an NSS database (no password) in {db.path}",
                               ("certutil", "-N", "--empty-password", "-d", db.spec)))
    elif present and cert is not None and present == [_der(cert)] and _nss_trusted_for_tls(db):
        return []
    elif present:
        steps += [TrustStep(db.browser, "run", f"delete the older stackpanel CA {nick!r} from {db.path}",
                            ("certutil", "-D", "-d", db.spec, "-n", nick)) for _ in present]
    steps.append(TrustStep(db.browser, "run", f"add the stackpanel CA as {nick!r} to {db.path}, trusted for TLS",
                           ("certutil", "-A", "-d", db.spec, "-t", "C,,", "-n", nick, "-i", str(ca_pem))))
    return steps


def trust_plan(remove: bool = False, *, ca_directory: Path | None = None, home: Path | None = None,
               system: SystemArg = "auto", nss: bool = True) -> list[TrustStep]:
    """Exactly what installing (or with ``remove``, removing) trust in the local CA changes.

    Installing makes the CA when there is none yet. Stores that already trust the current CA (or,
    for ``remove``, hold nothing of ours) get no step, so an empty plan means nothing to do.
    ``system=None`` leaves the system store out; ``nss=False`` leaves the browsers' databases out.
    """
    directory = ca_dir() if ca_directory is None else ca_directory
    if remove:
        cert, ca_pem = load_ca(directory), directory / CA_FILE
    else:
        ca_pem, _ = ensure_ca(directory)
        cert = load_ca(directory)
    steps: list[TrustStep] = []
    store = _system(system)
    if store is not None:
        steps += _system_steps(store, ca_pem, cert, remove)
    if nss:
        for db in nss_dbs(home):
            steps += _nss_steps(db, ca_pem, cert, remove)
    return steps


def _preflight(plan: Sequence[TrustStep]) -> None:
    for tool in dict.fromkeys(s.argv[0] for s in plan if s.action == "run"):
        if shutil.which(tool) is None:
            raise TrustError(_INSTALL_HINTS.get(tool, f"{tool} not found on PATH"))
    rooted = [s for s in plan if s.needs_root]
    if rooted and os.geteuid() != 0:
        commands = [s.shell for s in rooted]
        raise TrustError(f"changing the {rooted[0].store} needs root. Run:\n    {' && '.join(commands)}\n"
                         f"then run `{FIX_COMMAND}` again for the browsers (or leave the system store out).",
                         commands)


def apply_trust(plan: Sequence[TrustStep]) -> list[str]:
    """Carry out ``plan`` in order; returns one line per change made.

    Nothing is changed when a tool is missing or root is needed and this is not root: TrustError
    says what to install or the exact sudo command. A failing step stops the plan; the error says
    which steps were already done.
    """
    _preflight(plan)
    done: list[str] = []
    for step in plan:
        try:
            if step.action == "copy":
                assert step.source is not None and step.target is not None
                step.target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(step.source, step.target)
                os.chmod(step.target, 0o644)
            elif step.action == "delete":
                assert step.target is not None
                step.target.unlink(missing_ok=True)
            elif step.action == "mkdir":
                assert step.target is not None
                step.target.mkdir(parents=True, exist_ok=True, mode=0o700)
            else:
                result = subprocess.run(list(step.argv), capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
                                        stdin=subprocess.DEVNULL)
                if result.returncode != 0:
                    out = (result.stderr or result.stdout).strip().splitlines()
                    raise TrustError(f"{step.shell} failed (exit {result.returncode}): "
                                     f"{out[-1] if out else 'no output'}" + _done_so_far(done))
        except OSError as e:
            raise TrustError(f"{step.summary}: {e.strerror or e}" + _done_so_far(done)) from e
        except subprocess.TimeoutExpired as e:
            raise TrustError(f"{step.shell} did not finish in {COMMAND_TIMEOUT:.0f} s" + _done_so_far(done)) from e
        log.info("trust: %s", step.summary)
        done.append(f"{step.store}: {step.summary}")
    return done


def _done_so_far(done: list[str]) -> str:
    return ("\nalready done: " + "; ".join(done)) if done else ""


# ----------------------------------------------------------------------------------- the status

StoreState = Literal["trusted", "not trusted", "outdated", "unknown"]


@dataclass(frozen=True)
class StoreStatus:
    store: str  # "system store (Debian/Ubuntu)", "Chromium", "Firefox (profile x)"
    location: Path
    state: StoreState
    detail: str = ""


@dataclass(frozen=True)
class TrustStatus:
    """Where the local CA is trusted, with one sentence for the user."""

    ca: Path | None  # None: no CA made yet
    fingerprint: str | None
    stores: tuple[StoreStatus, ...] = field(default_factory=tuple)
    message: str = ""

    @property
    def trusted(self) -> bool:
        """Every store we could check trusts the current CA (and there is at least one)."""
        known = [s for s in self.stores if s.state != "unknown"]
        return bool(known) and all(s.state == "trusted" for s in known)

    def store(self, name: str) -> StoreStatus | None:
        return next((s for s in self.stores if s.store == name), None)


def _system_status(store: SystemStore, cert: x509.Certificate) -> StoreStatus:
    if store.kind == "macos":
        return StoreStatus(store.label, store.anchor, "trusted" if _macos_has(cert) else "not trusted")
    der = _file_der(store.anchor)
    if der is None:
        return StoreStatus(store.label, store.anchor, "not trusted", f"{store.anchor} does not exist")
    if der != _der(cert):
        return StoreStatus(store.label, store.anchor, "outdated", f"{store.anchor} holds an older stackpanel CA")
    if not _bundle_has(store.bundle, cert):
        rebuild = shlex.join(store.update)
        return StoreStatus(store.label, store.anchor, "not trusted",
                           f"{store.anchor} is in place but {store.bundle} was not rebuilt ({rebuild})")
    return StoreStatus(store.label, store.anchor, "trusted")


def _nss_status(db: NssDb, cert: x509.Certificate) -> StoreStatus:
    if not db.exists:
        return StoreStatus(db.browser, db.path, "not trusted", f"no NSS database in {db.path} yet")
    present = _nss_der(db)
    if present is None:
        return StoreStatus(db.browser, db.path, "unknown", _INSTALL_HINTS["certutil"])
    if not present:
        return StoreStatus(db.browser, db.path, "not trusted")
    if _der(cert) not in present:
        return StoreStatus(db.browser, db.path, "outdated", "it trusts an older stackpanel CA")
    if not _nss_trusted_for_tls(db):
        return StoreStatus(db.browser, db.path, "not trusted", "the CA is there but not trusted for TLS (flags C,,)")
    return StoreStatus(db.browser, db.path, "trusted")


def trust_status(ca_directory: Path | None = None, *, home: Path | None = None,
                 system: SystemArg = "auto", nss: bool = True) -> TrustStatus:
    """Where the current CA is trusted; never makes a CA and never changes a store."""
    directory = ca_dir() if ca_directory is None else ca_directory
    cert = load_ca(directory)
    if cert is None:
        return TrustStatus(None, None, (), "stackpanel has no local CA yet: it is made the first time a node "
                                           f"serves HTTPS (or by `{FIX_COMMAND}`, which also installs it).")
    stores: list[StoreStatus] = []
    store = _system(system)
    if store is not None:
        stores.append(_system_status(store, cert))
    if nss:
        stores += [_nss_status(db, cert) for db in nss_dbs(home)]
    status = TrustStatus(directory / CA_FILE, fingerprint(cert), tuple(stores))
    return TrustStatus(status.ca, status.fingerprint, status.stores, _message(status))


def _message(status: TrustStatus) -> str:
    untrusted = [s for s in status.stores if s.state in ("not trusted", "outdated")]
    unknown = [s for s in status.stores if s.state == "unknown"]
    if not status.stores:
        return (f"stackpanel cannot find a trust store on this system; trust {status.ca} in your browser "
                f"by hand (fingerprint {status.fingerprint}).")
    if not untrusted:
        text = "Browsers trust stackpanel's local CA (" + ", ".join(s.store for s in status.stores
                                                                      if s.state == "trusted") + ")."
        if unknown:
            text += " Not checked: " + "; ".join(f"{s.store}: {s.detail}" for s in unknown) + "."
        return text
    names = ", ".join(s.store + (" (an older stackpanel CA)" if s.state == "outdated" else "") for s in untrusted)
    return (f"Browsers will warn \"Your connection is not private\" (NET::ERR_CERT_AUTHORITY_INVALID) on "
            f"stackpanel's https:// URLs: its local CA is not trusted by {names}. Run `{FIX_COMMAND}` to "
            f"install it (it asks first and says what it changes; `{FIX_COMMAND} --remove` undoes it).")
