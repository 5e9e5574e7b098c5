"""The per-user local certificate authority and the leaf certificates it issues per run.

Why the CA cannot hurt you if its key is stolen
-----------------------------------------------
The CA certificate carries a **critical NameConstraints** extension. Every verifier that trusts
it (browsers, curl/OpenSSL, ``cryptography``) refuses a leaf whose subjectAltName falls outside
the permitted subtrees, so the key can only ever vouch for:

* DNS ``localhost`` (RFC 5280: a dNSName constraint permits the name *and every subdomain*, so
  this covers ``*.localhost`` too; the leading-dot form ``.localhost`` is not RFC 5280 for DNS
  names and strict verifiers, ``cryptography``'s among them, reject it as malformed),
* DNS ``test`` (and its subdomains): RFC 6761 reserves ``.test``, it is never delegated in the
  public DNS, so no real site can have such a name,
* IP 127.0.0.0/8 and ::1/128,
* names a profile declares beyond those (``extra_names``), **but only names that cannot be a
  real site**: subdomains of the special-use domains ``localhost``, ``test``, ``internal``,
  ``home.arpa``, ``local`` and non-global IP addresses (RFC 1918, ULA, link-local). A public name
  such as ``app.example.com`` is refused with a message saying what to use instead
  (``app.localhost`` or ``app.test``): a stolen key must never mint a certificate for a real site.

The CA is made once, but profiles add names later: when a profile needs a permitted name the
current CA does not cover, :func:`ensure_ca` makes a **new** CA whose constraints are the union
(the old one is kept as ``ca-<serial>.pem.old``), and :func:`stackpanel.core.tls.trust_status`
reports that the trusted CA is out of date until ``stackpanel trust`` runs again. The permitted
names live in the CA certificate itself; nothing else records them.

``BasicConstraints(ca=True, path_length=0)``: the key cannot make an intermediate CA that would
escape the constraints either (constraints apply down the whole chain anyway).

Key type: EC P-256. Every browser, nginx, Apache and curl accept it, and key generation takes
~1 ms instead of ~50-500 ms for RSA 2048+ (leaves are issued per run, on the start-up path).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import ipaddress
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import platformdirs
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from stackpanel.core.errors import StackpanelError

log = logging.getLogger("stackpanel.tls")

CA_FILE = "ca.pem"
CA_KEY_FILE = "ca-key.pem"
LEAF_FILE = "cert.pem"
LEAF_KEY_FILE = "key.pem"

CA_VALID_DAYS = 3650
CA_RENEW_DAYS = 30  # a CA this close to its end is replaced (and must be trusted again)
LEAF_MAX_DAYS = 30
LEAF_RENEW_DAYS = 7  # a leaf with this little left is re-issued
BACKDATE = dt.timedelta(minutes=5)  # small clock skew between this machine and a browser VM

# Always permitted: loopback. A dNSName constraint covers the name and all its subdomains.
BASE_DNS: tuple[str, ...] = ("localhost", "test")
BASE_IPS: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (
    ipaddress.ip_network("127.0.0.0/8"),
    ipaddress.ip_network("::1/128"),
)
# Special-use domains (RFC 6761 localhost/test, RFC 6762 local, RFC 8375 home.arpa, ICANN 2024
# internal): none can be a public site, so a name under them may be added to the constraints.
PRIVATE_SUFFIXES: tuple[str, ...] = ("localhost", "test", "internal", "home.arpa", "local")

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")

Clock = Callable[[], dt.datetime]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class TlsError(StackpanelError):
    """The local CA or a leaf certificate cannot be made or used."""


@dataclass(frozen=True)
class LeafCert:
    """A leaf issued for one run: what nginx ``ssl_certificate``/Apache ``SSLCertificateFile`` take."""

    cert: Path  # PEM: the leaf, then the CA (full chain)
    key: Path  # PEM private key, mode 0600
    ca: Path  # the CA certificate PEM (curl --cacert, the trust stores)
    names: tuple[str, ...]  # the DNS names and IPs in subjectAltName, in the order asked
    not_after: dt.datetime


Name = str | ipaddress.IPv4Address | ipaddress.IPv6Address
Net = ipaddress.IPv4Network | ipaddress.IPv6Network


# ---------------------------------------------------------------------------------------- names

def normalize_name(name: str) -> Name:
    """A DNS name (lower case, no trailing dot) or an IP address; TlsError for anything else."""
    text = name.strip()
    try:
        address = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        pass
    else:
        if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
            raise TlsError(f"{name!r}: a certificate cannot name an address with a zone id (%...)")
        return address
    host = text.lower().rstrip(".")
    labels = host.split(".")
    body = labels[1:] if labels and labels[0] == "*" else labels
    if not host or len(host) > 253 or not body or not all(_LABEL.match(label) for label in body):
        raise TlsError(f"{name!r} is not a host name or IP address a certificate can name")
    return host


def _dns_covered(host: str, base: str) -> bool:
    host = host.removeprefix("*.")
    return host == base or host.endswith("." + base)


def name_permitted(name: Name, dns: Sequence[str], ips: Sequence[Net]) -> bool:
    """Whether a verifier applying these permitted subtrees accepts ``name`` (RFC 5280 semantics)."""
    if isinstance(name, str):
        return any(_dns_covered(name, d) for d in dns)
    return any(name.version == net.version and name in net for net in ips)


def private_name(name: Name) -> bool:
    """A name no public site can have: under a special-use domain, or a non-global address."""
    if isinstance(name, str):  # strictly below the suffix: "internal" itself would permit the whole TLD
        host = name.removeprefix("*.")
        return any(host.endswith("." + s) for s in PRIVATE_SUFFIXES)
    return not name.is_global and not name.is_multicast and not name.is_unspecified


def _refusal(name: Name) -> str:
    if isinstance(name, str):
        stem = name.removeprefix("*.").split(".")[0]
        return (f"{name} is a public name: stackpanel's local CA will not sign it, because anyone holding "
                f"the CA key could then impersonate a real site. Use a name under .localhost or .test "
                f"instead (e.g. {stem}.localhost, which browsers resolve to 127.0.0.1 on their own).")
    return (f"{name} is a public address: stackpanel's local CA only signs loopback and private "
            f"addresses (127.0.0.0/8, ::1, RFC 1918, fc00::/7, link-local).")


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be in a stackpanel leaf (a sentence saying what to use instead), or None.

    For profile validation: a public name or address, a malformed one, a zone id.
    """
    try:
        norm = normalize_name(name)
    except TlsError as e:
        return str(e)
    if name_permitted(norm, BASE_DNS, BASE_IPS) or private_name(norm):
        return None
    return _refusal(norm)


def names_outside_ca(names: Sequence[str], ca_directory: Path | None = None) -> list[str]:
    """The names the current CA does not permit: issuing a leaf for them makes a new CA, which
    browsers must be told to trust again (``stackpanel trust``). All of them when there is no CA yet
    and they go beyond loopback; never makes a CA."""
    cert = load_ca(ca_directory)
    dns, ips = ca_constraints(cert) if cert is not None else (list(BASE_DNS), list(BASE_IPS))
    return [n for n in names if not name_permitted(normalize_name(n), dns, ips)]


def _constraint_sets(extra: Sequence[Name]) -> tuple[list[str], list[Net]]:
    dns = list(BASE_DNS)
    ips: list[Net] = list(BASE_IPS)
    for name in extra:
        if name_permitted(name, dns, ips):
            continue
        if isinstance(name, str):
            dns.append(name.removeprefix("*."))
        else:
            ips.append(ipaddress.ip_network(name))
    return dns, ips


def ca_constraints(ca: x509.Certificate) -> tuple[list[str], list[Net]]:
    """The permitted DNS names and IP networks written in a CA certificate."""
    try:
        nc = ca.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return [], []
    dns = [g.value for g in nc.permitted_subtrees or () if isinstance(g, x509.DNSName)]
    ips = [g.value for g in nc.permitted_subtrees or () if isinstance(g, x509.IPAddress)]
    return dns, [n for n in ips if isinstance(n, ipaddress.IPv4Network | ipaddress.IPv6Network)]


# ---------------------------------------------------------------------------------------- files

def ca_dir() -> Path:
    """Where the user's CA lives: ``user_data_dir("stackpanel")/ca``, mode 0700."""
    path = Path(platformdirs.user_data_dir("stackpanel")) / "ca"
    _private_dir(path)
    return path


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Atomically replace ``path``; the file has ``mode`` from its first byte (no window at 0644)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One process at a time makes a CA or a leaf in ``directory`` (two ``up`` at once)."""
    with open(directory / ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _load_cert(path: Path) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return None


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey | None:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    return key if isinstance(key, ec.EllipticCurvePrivateKey) else None


def _same_key(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> bool:
    der = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return cert.public_key().public_bytes(*der) == key.public_key().public_bytes(*der)


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 fingerprint as browsers show it (AA:BB:...)."""
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


# ------------------------------------------------------------------------------------------- CA

def _user() -> str:
    try:
        import pwd
        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return os.environ.get("USER", "user")


def ca_common_name() -> str:
    return f"stackpanel local CA ({_user()})"


def make_ca_cert(key: ec.EllipticCurvePrivateKey, dns: Sequence[str], ips: Sequence[Net],
                 now: dt.datetime, valid_days: int = CA_VALID_DAYS) -> x509.Certificate:
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "stackpanel local development"),
        x509.NameAttribute(NameOID.COMMON_NAME, ca_common_name()),
    ])
    permitted: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    permitted += [x509.IPAddress(n) for n in ips]
    pub = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(pub)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE).not_valid_after(now + dt.timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
        .sign(key, hashes.SHA256())
    )


def _ca_usable(cert: x509.Certificate | None, key: ec.EllipticCurvePrivateKey | None, now: dt.datetime,
               need: Sequence[Name]) -> bool:
    if cert is None or key is None or not _same_key(cert, key):
        return False
    if cert.not_valid_after_utc - now < dt.timedelta(days=CA_RENEW_DAYS):
        return False
    dns, ips = ca_constraints(cert)
    return all(name_permitted(n, dns, ips) for n in need)


def ensure_ca(directory: Path | None = None, *, extra_names: Sequence[str] = (),
              now: Clock = _utcnow) -> tuple[Path, Path]:
    """``(ca.pem, ca-key.pem)`` in ``directory`` (default :func:`ca_dir`), made on first use.

    ``extra_names`` are names beyond loopback that the CA must permit; each must be private
    (see the module docstring) or TlsError says what to use instead. A CA that does not permit
    them, is near its end or does not match its key is replaced by a new one (the old certificate
    is kept beside it as ``ca-<serial>.pem.old``; browsers must then trust the new one).
    """
    directory = ca_dir() if directory is None else directory
    _private_dir(directory)
    need = [normalize_name(n) for n in extra_names]
    for name in need:
        if not (name_permitted(name, BASE_DNS, BASE_IPS) or private_name(name)):
            raise TlsError(_refusal(name))
    cert_path, key_path = directory / CA_FILE, directory / CA_KEY_FILE
    with _locked(directory):
        t = now()
        cert, key = _load_cert(cert_path), _load_key(key_path)
        if _ca_usable(cert, key, t, need):
            if key_path.stat().st_mode & 0o077:
                os.chmod(key_path, 0o600)
            return cert_path, key_path
        old_dns: list[Name] = []
        if cert is not None:
            dns, ips = ca_constraints(cert)
            old_dns = [d for d in dns if d not in BASE_DNS] + [n.network_address for n in ips
                                                               if n not in BASE_IPS and n.num_addresses == 1]
            cert_path.rename(directory / f"ca-{cert.serial_number:x}.pem.old")
            log.warning("replacing the local CA %s (it does not permit %s, is near its end or lost its key); "
                        "run `stackpanel trust` so browsers trust the new one",
                        cert_path, ", ".join(map(str, need)) or "nothing new")
        dns, ips = _constraint_sets([*old_dns, *need])
        key = ec.generate_private_key(ec.SECP256R1())
        _write(key_path, _key_pem(key), 0o600)
        _write(cert_path, make_ca_cert(key, dns, ips, t).public_bytes(serialization.Encoding.PEM), 0o644)
        log.info("made the local CA %s (permits %s)", cert_path, ", ".join([*dns, *map(str, ips)]))
        return cert_path, key_path


def load_ca(directory: Path | None = None) -> x509.Certificate | None:
    """The current CA certificate, or None when none was made yet (never makes one)."""
    directory = ca_dir() if directory is None else directory
    return _load_cert(directory / CA_FILE)


# ----------------------------------------------------------------------------------------- leaf

def _san(name: Name) -> x509.GeneralName:
    return x509.DNSName(name) if isinstance(name, str) else x509.IPAddress(name)


def sign_leaf(ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, names: Sequence[Name],
              key: ec.EllipticCurvePrivateKey, now: dt.datetime, valid_days: int) -> x509.Certificate:
    """Sign a serverAuth leaf for ``names``. Checks nothing: callers decide what may be signed."""
    pub = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "stackpanel local development")]))
        .issuer_name(ca_cert.subject).public_key(pub)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE).not_valid_after(now + dt.timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([_san(n) for n in names]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def leaf_names(cert: x509.Certificate) -> set[Name]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    out: set[Name] = {v.lower() for v in san.get_values_for_type(x509.DNSName)}
    out.update(v for v in san.get_values_for_type(x509.IPAddress)
               if isinstance(v, ipaddress.IPv4Address | ipaddress.IPv6Address))
    return out


def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _reusable(out_dir: Path, ca: x509.Certificate, want: Sequence[Name], t: dt.datetime) -> x509.Certificate | None:
    cert, key = _load_cert(out_dir / LEAF_FILE), _load_key(out_dir / LEAF_KEY_FILE)
    if cert is None or key is None or not _same_key(cert, key) or not _signed_by(cert, ca):
        return None
    if not set(want) <= leaf_names(cert):
        return None
    if cert.not_valid_after_utc - t <= dt.timedelta(days=LEAF_RENEW_DAYS) or cert.not_valid_before_utc > t:
        return None
    return cert


def issue_leaf(names: Sequence[str], out_dir: Path, *, ca_directory: Path | None = None,
               valid_days: int = LEAF_MAX_DAYS, now: Clock = _utcnow) -> LeafCert:
    """A leaf for ``names`` in ``out_dir`` (``cert.pem`` full chain, ``key.pem`` 0600).

    Reuses the leaf already there when it covers ``names``, is signed by the current CA and has
    more than 7 days left; otherwise issues a new one (that is the renewal). Names outside
    loopback make the CA permit them (:func:`ensure_ca` ``extra_names``) or are refused.
    """
    if not names:
        raise TlsError("a certificate needs at least one name (e.g. localhost)")
    if not 1 <= valid_days <= LEAF_MAX_DAYS:
        raise TlsError(f"leaf certificates are valid 1 to {LEAF_MAX_DAYS} days, not {valid_days}")
    want: list[Name] = []
    for n in names:
        norm = normalize_name(n)
        if norm not in want:
            want.append(norm)
    extra = [str(n) for n in want if not name_permitted(n, BASE_DNS, BASE_IPS)]
    ca_path, ca_key_path = ensure_ca(ca_directory, extra_names=extra, now=now)
    ca_cert, ca_key = _load_cert(ca_path), _load_key(ca_key_path)
    if ca_cert is None or ca_key is None:  # ensure_ca just wrote them; only a racing delete gets here
        raise TlsError(f"the local CA in {ca_path.parent} cannot be read; delete the directory to make a new one")
    out_dir.mkdir(parents=True, exist_ok=True)  # not chmod'ed: it may be a run dir servers' workers read
    with _locked(out_dir):
        t = now()
        cert = _reusable(out_dir, ca_cert, want, t)
        if cert is None:
            key = ec.generate_private_key(ec.SECP256R1())
            cert = sign_leaf(ca_cert, ca_key, want, key, t, valid_days)
            _write(out_dir / LEAF_KEY_FILE, _key_pem(key), 0o600)
            chain = cert.public_bytes(serialization.Encoding.PEM) + ca_cert.public_bytes(serialization.Encoding.PEM)
            _write(out_dir / LEAF_FILE, chain, 0o644)
            log.info("issued a leaf for %s in %s, valid until %s", ", ".join(map(str, want)), out_dir,
                     cert.not_valid_after_utc.isoformat())
        else:
            log.debug("reusing the leaf in %s (valid until %s)", out_dir, cert.not_valid_after_utc.isoformat())
    return LeafCert(cert=out_dir / LEAF_FILE, key=out_dir / LEAF_KEY_FILE, ca=ca_path,
                    names=tuple(str(n) for n in want), not_after=cert.not_valid_after_utc)
