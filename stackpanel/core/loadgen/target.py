"""The loopback guard: the only place a load URL becomes an address to connect to.

Only ``http://`` and ``https://`` URLs whose host is a literal loopback address (127.0.0.0/8, ::1) or the name
``localhost`` are accepted. ``localhost`` is resolved through the system resolver but only its
loopback answers are kept, so a hosts-file entry pointing elsewhere cannot redirect the load.
Literal forms other than dotted quads (``127.1``, ``2130706433``) are not addresses to
``ipaddress`` and are refused like any other name. Redirects are never followed by the
generator, so the address checked here is the only one ever connected to.
"""
from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from stackpanel.core.loadgen.errors import LoadTargetError

_HINT = "use http://127.0.0.1:PORT/..., http://[::1]:PORT/... or http://localhost:PORT/..."


@dataclass(frozen=True, slots=True)
class LoadTarget:
    """A checked load target: where to connect and what to ask for."""

    url: str  # as given (normalised scheme/host case is not applied)
    host: str  # host as written in the URL, without brackets (for the Host header)
    address: str  # the loopback IP actually connected to
    port: int
    path: str  # path + query, never empty ("/")
    tls: bool = False  # https: verified against stackpanel's local CA

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == (443 if self.tls else 80) else f"{host}:{self.port}"

    @property
    def address_url(self) -> str:
        """The URL with the checked loopback address in place of the host name, for tools that
        would resolve the name themselves (wrk): a hosts entry cannot send them elsewhere."""
        address = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.scheme}://{address}:{self.port}{self.path}"

    @property
    def family(self) -> int:
        return socket.AF_INET6 if ":" in self.address else socket.AF_INET


def _loopback_address(text: str) -> str | None:
    """The address if ``text`` is a literal loopback IP, else None (not an IP at all: raises ValueError)."""
    ip = ipaddress.ip_address(text)
    return str(ip) if ip.is_loopback else None


def _resolve_localhost(port: int) -> str:
    try:
        infos = socket.getaddrinfo("localhost", port, type=socket.SOCK_STREAM)
    except OSError:
        infos = []
    loopback = []
    for family, _type, _proto, _name, sockaddr in infos:
        try:
            ip = ipaddress.ip_address(sockaddr[0])
        except ValueError:
            continue
        if ip.is_loopback:
            loopback.append((family != socket.AF_INET, str(ip)))
    if not loopback:
        # The resolver said nothing useful (or only non-loopback answers): the name means 127.0.0.1.
        return "127.0.0.1"
    loopback.sort()  # IPv4 first, like most servers bind
    return loopback[0][1]


def parse_target(url: str) -> LoadTarget:
    """Check ``url`` and return where to send load; raise :class:`LoadTargetError` otherwise."""
    if not isinstance(url, str) or not url.strip():
        raise LoadTargetError(f"no load target URL given; {_HINT}")
    url = url.strip()
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        what = f"'{scheme}://'" if scheme else "no scheme"
        raise LoadTargetError(
            f"load target {url!r} has {what}; only http:// and https:// to this machine are supported; {_HINT}"
        )
    if "@" in parts.netloc:
        raise LoadTargetError(f"load target {url!r} contains credentials (user@host); remove them")
    host = parts.hostname  # lower-cased, brackets removed
    if not host:
        raise LoadTargetError(f"load target {url!r} has no host; {_HINT}")
    try:
        port = parts.port
    except ValueError:
        raise LoadTargetError(f"load target {url!r} has an invalid port (must be 1-65535)") from None
    if port is None:
        port = 443 if scheme == "https" else 80
    if not 1 <= port <= 65535:
        raise LoadTargetError(f"load target {url!r} has an invalid port (must be 1-65535)")
    if "%" in host:
        raise LoadTargetError(f"load target {url!r}: scoped IPv6 addresses are not supported; use [::1]")

    if host == "localhost":
        address = _resolve_localhost(port)
    else:
        try:
            literal = _loopback_address(host)
        except ValueError:
            raise LoadTargetError(
                f"load target {url!r}: host {host!r} is not this machine; load may only be sent to "
                f"loopback addresses; {_HINT}"
            ) from None
        if literal is None:
            raise LoadTargetError(
                f"load target {url!r}: {host} is not a loopback address; load may only be sent to "
                f"127.0.0.0/8, ::1 or localhost; {_HINT}"
            )
        address = literal

    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    if any(c in path for c in "\r\n \t"):
        raise LoadTargetError(f"load target {url!r}: the path contains whitespace; percent-encode it")
    return LoadTarget(url=url, host=host, address=address, port=port, path=path, tls=scheme == "https")
