"""The local CA, its leaves and the trust steps: real keys, real verifier, real certutil/update-ca-certificates."""
from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import os
import shlex
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import DNSName, IPAddress, PolicyBuilder, Store, VerificationError

from stackpanel.core.errors import StackpanelError
from stackpanel.core.tls import (
    SystemStore,
    TlsError,
    TrustError,
    apply_trust,
    ca_dir,
    ensure_ca,
    issue_leaf,
    name_problem,
    names_outside_ca,
    nss_dbs,
    trust_plan,
    trust_status,
)
from stackpanel.core.tls.ca import normalize_name, sign_leaf
from stackpanel.core.tls.trust import nss_nickname

T0 = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)


class Clock:
    def __init__(self, t: dt.datetime = T0) -> None:
        self.t = t

    def __call__(self) -> dt.datetime:
        return self.t


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def chain(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def verify(leaf: x509.Certificate, ca: x509.Certificate, name: str, at: dt.datetime = T0) -> None:
    subject: DNSName | IPAddress
    try:
        subject = IPAddress(ipaddress.ip_address(name))
    except ValueError:
        subject = DNSName(name)
    PolicyBuilder().store(Store([ca])).time(at).build_server_verifier(subject).verify(leaf, [])


@pytest.fixture
def cadir(tmp_path: Path) -> Path:
    return tmp_path / "ca"


@pytest.fixture
def clock() -> Clock:
    return Clock()


# ------------------------------------------------------------------------------------------- CA

def test_ca_is_name_constrained_to_loopback_and_critical(cadir: Path, clock: Clock) -> None:
    ca_pem, _ = ensure_ca(cadir, now=clock)
    ca = load(ca_pem)
    nc = ca.extensions.get_extension_for_class(x509.NameConstraints)
    assert nc.critical
    permitted = {g.value for g in nc.value.permitted_subtrees or ()}
    assert permitted == {"localhost", "test", ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")}
    assert nc.value.excluded_subtrees is None
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = ca.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert ca.not_valid_after_utc - T0 > dt.timedelta(days=3000)


def test_ca_key_is_readable_by_the_user_only_and_reused(cadir: Path, clock: Clock) -> None:
    ca_pem, key = ensure_ca(cadir, now=clock)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(cadir.stat().st_mode) == 0o700
    first = ca_pem.read_bytes(), key.read_bytes()
    os.chmod(key, 0o644)  # loosened by hand: put back
    assert ensure_ca(cadir, now=clock) == (ca_pem, key)
    assert (ca_pem.read_bytes(), key.read_bytes()) == first
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_ca_dir_is_the_users_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert ca_dir() == tmp_path / "data" / "stackpanel" / "ca"
    assert stat.S_IMODE(ca_dir().stat().st_mode) == 0o700


def test_a_ca_whose_key_is_lost_is_replaced(cadir: Path, clock: Clock) -> None:
    ca_pem, key = ensure_ca(cadir, now=clock)
    old = load(ca_pem)
    key.unlink()
    ensure_ca(cadir, now=clock)
    assert load(ca_pem) != old
    assert (cadir / f"ca-{old.serial_number:x}.pem.old").is_file()


# ----------------------------------------------------------------------------------------- leaf

def test_leaf_names_usage_lifetime_and_files(tmp_path: Path, cadir: Path, clock: Clock) -> None:
    leaf = issue_leaf(["localhost", "127.0.0.1", "::1", "App.Localhost."], tmp_path / "run", ca_directory=cadir,
                      now=clock)
    assert leaf.names == ("localhost", "127.0.0.1", "::1", "app.localhost")
    certs = chain(leaf.cert)
    assert len(certs) == 2 and certs[1] == load(leaf.ca)  # full chain: leaf, then CA
    cert = certs[0]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "app.localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.not_valid_after_utc - cert.not_valid_before_utc <= dt.timedelta(days=30, minutes=5)
    assert leaf.not_after == cert.not_valid_after_utc == T0 + dt.timedelta(days=30)
    assert stat.S_IMODE(leaf.key.stat().st_mode) == 0o600
    for name in leaf.names:
        verify(cert, certs[1], name)


def test_verifier_refuses_a_leaf_outside_the_constraints(tmp_path: Path, cadir: Path, clock: Clock) -> None:
    """What a stolen CA key could mint for a real site: signed, but no verifier accepts it."""
    leaf = issue_leaf(["localhost"], tmp_path / "run", ca_directory=cadir, now=clock)
    ca = load(leaf.ca)
    ca_key = serialization.load_pem_private_key((cadir / "ca-key.pem").read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    verify(chain(leaf.cert)[0], ca, "localhost")  # the control: the same CA, a permitted name
    for name in ("example.com", "localhost.example.com", "10.0.0.1", "2001:db8::1"):
        forged = sign_leaf(ca, ca_key, [normalize_name(name)], ec.generate_private_key(ec.SECP256R1()), T0, 30)
        with pytest.raises(VerificationError, match="name constraint"):
            verify(forged, ca, name)


def test_public_names_are_refused_with_what_to_use_instead(tmp_path: Path, cadir: Path, clock: Clock) -> None:
    with pytest.raises(TlsError, match=r"example\.com is a public name.*shop\.localhost") as e:
        issue_leaf(["localhost", "shop.example.com"], tmp_path / "run", ca_directory=cadir, now=clock)
    assert isinstance(e.value, StackpanelError)
    with pytest.raises(TlsError, match=r"8\.8\.8\.8 is a public address"):
        issue_leaf(["8.8.8.8"], tmp_path / "run", ca_directory=cadir, now=clock)
    with pytest.raises(TlsError, match="not a host name"):
        issue_leaf(["bad name"], tmp_path / "run", ca_directory=cadir, now=clock)
    with pytest.raises(TlsError, match="1 to 30 days"):
        issue_leaf(["localhost"], tmp_path / "run", ca_directory=cadir, now=clock, valid_days=90)
    assert not (tmp_path / "run" / "cert.pem").exists()


@pytest.mark.parametrize(("name", "problem"), [
    ("localhost", None), ("api.localhost", None), ("127.0.0.2", None), ("[::1]", None), ("shop.test", None),
    ("shop.internal", None), ("nas.home.arpa", None), ("printer.local", None), ("*.app.localhost", None),
    ("192.168.1.10", None), ("fd00::5", None),
    ("internal", "public name"), ("*.internal", "public name"), ("example.com", "public name"),
    ("localhost.example.com", "public name"), ("1.1.1.1", "public address"), ("fe80::1%eth0", "zone id"),
    ("-bad-.localhost", "not a host name"), ("a b", "not a host name"), ("", "not a host name"),
])
def test_name_problem_says_which_names_a_leaf_can_carry(name: str, problem: str | None) -> None:
    found = name_problem(name)
    assert found is None if problem is None else (found is not None and problem in found)


def test_names_outside_ca_tells_before_a_new_ca_is_made(tmp_path: Path, cadir: Path, clock: Clock) -> None:
    assert names_outside_ca(["localhost", "shop.internal"], cadir) == ["shop.internal"]  # no CA yet
    assert not (cadir / "ca.pem").exists()
    issue_leaf(["shop.internal"], tmp_path / "run", ca_directory=cadir, now=clock)
    assert names_outside_ca(["localhost", "shop.internal", "api.shop.internal"], cadir) == []
    assert names_outside_ca(["nas.home.arpa"], cadir) == ["nas.home.arpa"]


def test_a_private_name_a_profile_declares_gets_a_ca_that_permits_it(tmp_path: Path, cadir: Path,
                                                                     clock: Clock) -> None:
    first = issue_leaf(["localhost"], tmp_path / "a", ca_directory=cadir, now=clock)
    old_ca, old_leaf = load(first.ca), first.cert.read_bytes()
    leaf = issue_leaf(["localhost", "shop.internal", "192.168.7.20"], tmp_path / "b", ca_directory=cadir, now=clock)
    new_ca = load(leaf.ca)
    assert new_ca != old_ca  # a new CA: it must be trusted again (trust_status says "outdated")
    permitted = {g.value for g in new_ca.extensions.get_extension_for_class(x509.NameConstraints).value
                 .permitted_subtrees or ()}
    assert {"shop.internal", ipaddress.ip_network("192.168.7.20/32")} <= permitted
    assert "internal" not in permitted  # exactly the declared name, never the whole special-use domain
    cert = chain(leaf.cert)[0]
    for name in ("shop.internal", "192.168.7.20", "localhost"):
        verify(cert, new_ca, name)
    # The old leaf is not signed by the current CA: re-issued, keeping the names the CA permits.
    again = issue_leaf(["localhost"], tmp_path / "a", ca_directory=cadir, now=clock)
    assert again.cert.read_bytes() != old_leaf
    verify(chain(again.cert)[0], new_ca, "localhost")
    assert issue_leaf(["shop.internal"], tmp_path / "c", ca_directory=cadir, now=clock).ca == leaf.ca
    assert load(leaf.ca) == new_ca  # names already permitted do not remake the CA


def test_leaf_is_reused_while_it_covers_the_names(tmp_path: Path, cadir: Path, clock: Clock) -> None:
    out = tmp_path / "run"
    first = issue_leaf(["localhost", "127.0.0.1"], out, ca_directory=cadir, now=clock)
    pem = first.cert.read_bytes()
    clock.t = T0 + dt.timedelta(days=1)
    assert issue_leaf(["127.0.0.1"], out, ca_directory=cadir, now=clock).cert.read_bytes() == pem  # a subset
    wider = issue_leaf(["localhost", "127.0.0.1", "api.localhost"], out, ca_directory=cadir, now=clock)
    assert wider.cert.read_bytes() != pem
    assert wider.not_after == clock.t + dt.timedelta(days=30)


def test_leaf_is_renewed_a_week_before_it_expires(tmp_path: Path, cadir: Path, clock: Clock) -> None:
    out = tmp_path / "run"
    first = issue_leaf(["localhost"], out, ca_directory=cadir, now=clock)
    pem = first.cert.read_bytes()
    clock.t = first.not_after - dt.timedelta(days=7, minutes=1)  # 7 days and a minute left: kept
    assert issue_leaf(["localhost"], out, ca_directory=cadir, now=clock).cert.read_bytes() == pem
    clock.t = first.not_after - dt.timedelta(days=6, hours=23)  # under 7 days: renewed
    renewed = issue_leaf(["localhost"], out, ca_directory=cadir, now=clock)
    assert renewed.cert.read_bytes() != pem
    assert renewed.not_after == clock.t + dt.timedelta(days=30)
    verify(chain(renewed.cert)[0], load(renewed.ca), "localhost", at=clock.t)
    with pytest.raises(VerificationError):  # and the old one really would have expired
        verify(x509.load_pem_x509_certificate(pem), load(renewed.ca), "localhost",
               at=first.not_after + dt.timedelta(seconds=1))


def test_a_broken_leaf_is_replaced(tmp_path: Path, cadir: Path, clock: Clock) -> None:
    out = tmp_path / "run"
    first = issue_leaf(["localhost"], out, ca_directory=cadir, now=clock)
    pem = first.cert.read_bytes()
    first.key.write_text("not a key")
    again = issue_leaf(["localhost"], out, ca_directory=cadir, now=clock)
    assert again.cert.read_bytes() != pem
    assert stat.S_IMODE(again.key.stat().st_mode) == 0o600


# ---------------------------------------------------------------------------------------- trust

def _tool(name: str, package: str) -> None:
    if shutil.which(name) is None:
        pytest.fail(f"{name} is needed by these tests: apt-get install {package}")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A HOME with one Firefox profile (its NSS db made by real certutil) and no Chromium db yet."""
    _tool("certutil", "libnss3-tools")
    home = tmp_path / "home"
    profile = home / ".mozilla" / "firefox" / "abcd1234.default-release"
    profile.mkdir(parents=True)
    subprocess.run(["certutil", "-N", "--empty-password", "-d", f"sql:{profile}"], check=True, capture_output=True)
    return home


@pytest.fixture
def system(tmp_path: Path) -> SystemStore:
    """A private Debian store run by the real update-ca-certificates (reads the distribution's CAs)."""
    _tool("update-ca-certificates", "ca-certificates")
    return SystemStore.debian(tmp_path / "sys")


def _nicks(db: Path) -> str:
    return subprocess.run(["certutil", "-L", "-d", f"sql:{db}"], capture_output=True, text=True, check=True).stdout


def test_trust_install_and_remove_round_trip(cadir: Path, home: Path, system: SystemStore) -> None:
    before = trust_status(cadir, home=home, system=system)
    assert before.ca is None and "no local CA yet" in before.message

    plan = trust_plan(ca_directory=cadir, home=home, system=system)
    ca_pem = cadir / "ca.pem"
    assert ca_pem.is_file()  # installing makes the CA on first use
    untrusted = trust_status(cadir, home=home, system=system)
    assert not untrusted.trusted
    assert [s.store for s in untrusted.stores] == ["system store (Debian/Ubuntu)", "Chromium",
                                                     "Firefox (profile abcd1234.default-release)"]
    assert "Your connection is not private" in untrusted.message and "`stackpanel trust`" in untrusted.message
    shells = [s.shell for s in plan]
    assert shells[0] == f"install -m 0644 {ca_pem} {system.anchor}"
    assert shells[1] == shlex.join(system.update) and shells[1].startswith("update-ca-certificates --certsconf ")
    chromium_db = home / ".pki" / "nssdb"
    assert f"certutil -N --empty-password -d sql:{chromium_db}" in shells
    assert sum("certutil -A" in s and "-t C,, -n " + nss_nickname() in s for s in shells) == 2
    assert all(str(s) for s in plan)

    done = apply_trust(plan)
    assert len(done) == len(plan)
    status = trust_status(cadir, home=home, system=system)
    assert status.trusted, status
    assert status.message.startswith("Browsers trust stackpanel's local CA")
    assert system.bundle is not None and ca_pem.read_text().strip() in system.bundle.read_text()
    assert (system.bundle.parent / f"{system.anchor.stem}.pem").resolve() == system.anchor
    for db in nss_dbs(home):
        assert nss_nickname() in _nicks(db.path) and "C,," in _nicks(db.path)
    assert trust_plan(ca_directory=cadir, home=home, system=system) == []  # nothing left to do

    undo = trust_plan(remove=True, ca_directory=cadir, home=home, system=system)
    assert [s.action for s in undo][:2] == ["delete", "run"] and "--fresh" in undo[1].argv
    apply_trust(undo)
    gone = trust_status(cadir, home=home, system=system)
    assert {s.state for s in gone.stores} == {"not trusted"}
    assert not system.anchor.exists()
    assert ca_pem.read_text().strip() not in system.bundle.read_text()
    etc = system.bundle.parent
    assert [p for p in etc.iterdir() if p.is_symlink() and not p.exists()] == []  # no dangling links left
    for db in nss_dbs(home):
        assert nss_nickname() not in _nicks(db.path)
    assert trust_plan(remove=True, ca_directory=cadir, home=home, system=system) == []


def test_a_replaced_ca_shows_as_outdated_and_trust_swaps_it(tmp_path: Path, cadir: Path, home: Path,
                                                             system: SystemStore) -> None:
    apply_trust(trust_plan(ca_directory=cadir, home=home, system=system))
    issue_leaf(["shop.internal"], tmp_path / "run", ca_directory=cadir)  # needs a CA that permits it
    status = trust_status(cadir, home=home, system=system)
    assert {s.state for s in status.stores} == {"outdated"}
    assert "an older stackpanel CA" in status.message
    plan = trust_plan(ca_directory=cadir, home=home, system=system)
    assert any(s.argv[:2] == ("certutil", "-D") for s in plan)
    apply_trust(plan)
    assert trust_status(cadir, home=home, system=system).trusted
    for db in nss_dbs(home):  # exactly one stackpanel certificate per database
        listed = subprocess.run(["certutil", "-L", "-d", db.spec, "-n", nss_nickname(), "-a"], capture_output=True,
                                text=True, check=True).stdout
        assert listed.count("BEGIN CERTIFICATE") == 1


def test_missing_certutil_changes_nothing_and_says_what_to_install(cadir: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    plan = trust_plan(ca_directory=cadir, home=home, system=None)
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(TrustError, match=r"certutil not found: sudo apt-get install libnss3-tools"):
        apply_trust(plan)
    assert not (home / ".pki").exists()


def test_system_store_without_root_gives_the_exact_sudo_command(cadir: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    store = dataclasses.replace(SystemStore.debian(tmp_path / "sys"), needs_root=True)  # as the real one is
    assert SystemStore.debian().needs_root and SystemStore.rhel().needs_root and SystemStore.macos().needs_root
    plan = trust_plan(ca_directory=cadir, home=tmp_path / "home", system=store)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(TrustError, match="needs root") as e:
        apply_trust(plan)
    update = shlex.join(store.update)
    assert f"sudo install -m 0644 {cadir / 'ca.pem'} {store.anchor} && sudo {update}" in str(e.value)
    assert e.value.commands == (f"sudo install -m 0644 {cadir / 'ca.pem'} {store.anchor}", f"sudo {update}")
    assert not store.anchor.exists() and not (tmp_path / "home" / ".pki").exists()  # nothing done before asking
