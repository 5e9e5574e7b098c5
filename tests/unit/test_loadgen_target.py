from __future__ import annotations

import socket

import pytest

from stackpanel.core.loadgen import LoadTargetError, parse_target
from stackpanel.core.loadgen.wrk import wrk_command


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1:8080/",
        "http://192.168.1.1/",
        "http://example.com/",
        "http://8.8.8.8:80/",
        "https://10.0.0.1:8443/",
        "ftp://127.0.0.1/",
        "127.0.0.1:8080/no-scheme",
        "http://[::2]:8080/",
        "http://[::ffff:10.0.0.1]:8080/",
        "http://0.0.0.0:8080/",
        "http://127.1:8080/",  # not a dotted quad: a name, and names other than localhost are refused
        "http://2130706433:8080/",
        "http://localhost.example.com/",
        "http://127.0.0.1.nip.io/",
        "http://user:pw@127.0.0.1:8080/",
        "http://127.0.0.1:99999/",
        "http://127.0.0.1:0/",
        "http:///path",
        "",
    ],
)
def test_refuses_anything_but_http_to_loopback(url: str) -> None:
    with pytest.raises(LoadTargetError):
        parse_target(url)


def test_refusal_message_says_what_to_do() -> None:
    with pytest.raises(LoadTargetError, match=r"not a loopback address.*127\.0\.0\.1"):
        parse_target("http://10.0.0.1:8080/api")
    with pytest.raises(LoadTargetError, match=r"'ftp://'.*only http:// and https://"):
        parse_target("ftp://127.0.0.1/")
    with pytest.raises(LoadTargetError, match="not this machine"):
        parse_target("http://example.com/")


@pytest.mark.parametrize(
    ("url", "address", "port", "path", "host_header"),
    [
        ("http://127.0.0.1:8080/api/hello", "127.0.0.1", 8080, "/api/hello", "127.0.0.1:8080"),
        ("http://127.0.0.2:8080", "127.0.0.2", 8080, "/", "127.0.0.2:8080"),
        ("http://127.255.255.254/x?a=1&b=2", "127.255.255.254", 80, "/x?a=1&b=2", "127.255.255.254"),
        ("http://[::1]:9000/p", "::1", 9000, "/p", "[::1]:9000"),
        ("HTTP://127.0.0.1:8080/", "127.0.0.1", 8080, "/", "127.0.0.1:8080"),
    ],
)
def test_accepts_loopback(url: str, address: str, port: int, path: str, host_header: str) -> None:
    t = parse_target(url)
    assert (t.address, t.port, t.path, t.host_header) == (address, port, path, host_header)


def test_localhost_resolves_only_to_loopback() -> None:
    t = parse_target("http://localhost:8080/api/hello")
    assert t.address in ("127.0.0.1", "::1")
    assert t.host_header == "localhost:8080"
    assert t.family in (socket.AF_INET, socket.AF_INET6)


def test_localhost_with_hostile_resolver_still_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_getaddrinfo(*args: object, **kwargs: object) -> list[tuple]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", 80))]

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    assert parse_target("http://localhost/").address == "127.0.0.1"


def test_wrk_command_uses_the_guard() -> None:
    with pytest.raises(LoadTargetError):
        wrk_command("http://10.0.0.1:8080/")
    argv = wrk_command("http://127.0.0.1:8080/api", connections=8, duration_s=2.5, threads=16)
    assert argv == ["wrk", "-t", "8", "-c", "8", "-d", "3s", "--latency", "http://127.0.0.1:8080/api"]


def test_wrk_is_handed_the_checked_address_not_the_name(monkeypatch: pytest.MonkeyPatch) -> None:
    # A hosts entry may point "localhost" elsewhere: wrk would resolve it itself. It gets the
    # loopback address the guard kept, and the Host header the user wrote.
    def hostile(*args: object, **kwargs: object) -> list[tuple]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", 8080)),
                (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", 8080, 0, 0))]

    monkeypatch.setattr(socket, "getaddrinfo", hostile)
    argv = wrk_command("http://localhost:8080/api/hello?x=1", connections=4, duration_s=1, threads=1)
    assert argv[-1] == "http://[::1]:8080/api/hello?x=1"
    assert argv[argv.index("-H") + 1] == "Host: localhost:8080"
    assert not any("localhost" in a for a in argv if not a.startswith("Host:"))


def test_wrk_gets_a_literal_address_unchanged() -> None:
    assert wrk_command("http://[::1]:9000/p", threads=1)[-1] == "http://[::1]:9000/p"
    assert "-H" not in wrk_command("http://127.0.0.2:9000/p", threads=1)


def test_https_to_loopback_is_a_tls_target() -> None:
    target = parse_target("https://localhost:8443/api?x=1")
    assert target.tls and target.port == 8443 and target.address_url == "https://127.0.0.1:8443/api?x=1"
    default = parse_target("https://127.0.0.1/")
    assert default.port == 443 and default.host_header == "127.0.0.1"
