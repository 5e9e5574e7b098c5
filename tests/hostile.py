"""Hostile profiles for the property tests: any value of any type at any field of every node kind.

The base profile sets every field the schema has (nginx, apache, gunicorn, uvicorn), so that
`leaves(BASE)` reaches each one; a test puts a hostile value at one leaf and checks that the
rendered configs keep their structure (or that the profile is refused with a ProfileError).
"""
from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

from hypothesis import strategies as st

BASE: dict[str, Any] = {
    "version": 1,
    "name": "hostile",
    "description": "every field set",
    "nodes": {
        "edge": {
            "kind": "nginx", "host": "127.0.0.1", "port": 18080, "workers": 1, "worker_connections": 512,
            "tls": {"port": 18443, "redirect": True, "http2": True},
            "keepalive_timeout_seconds": 5, "server_names": ["app.localhost"], "expose": False,
            "depends_on": [],
            "readiness_probe": {"http_get": {"path": "/"}, "initial_delay_seconds": 0, "period_seconds": 0.05,
                                "timeout_seconds": 10},
            "availability": {"restart": "on-failure", "backoff_seconds": 0.5, "max_restarts": 3},
            "shutdown": {"timeout_seconds": 5},
            "limits": {"max_body_mb": 2, "connect_timeout_seconds": 3, "read_timeout_seconds": 30,
                       "send_timeout_seconds": 30, "gzip": True, "rate_limit": {"requests_per_second": 10, "burst": 5},
                       "headers": {"X-Frame-Options": "DENY", "Content-Security-Policy": "default-src 'self'"}},
            "routes": [{"path": "/api", "to": "mid", "strip_prefix": True, "buffering": False,
                        "limits": {"max_body_mb": 4, "rate_limit": {"requests_per_second": 1}}},
                       {"path": "/lb", "to": ["app", "fast"], "balance": "least_conn", "max_fails": 2,
                        "fail_timeout_seconds": 5},
                       {"path": "/files", "static": "site", "cache_seconds": 60, "limits": {"headers": {"X-A": "b"}}},
                       {"path": "/", "static": "site", "follow_symlinks": True}],
        },
        "mid": {
            "kind": "apache", "host": "127.0.0.1", "port": 18081, "workers": 1, "threads_per_child": 16,
            "tls": {"port": 18444, "http2": True},
            "server_names": ["mid.localhost"], "expose": True,
            "limits": {"max_body_mb": 1, "gzip": True, "headers": {"X-B": "c"}},
            "routes": [{"path": "/api", "to": "app", "limits": {"read_timeout_seconds": 5}},
                       {"path": "/docs", "static": "site", "cache_seconds": 0},
                       {"path": "/v2", "to": "fast", "strip_prefix": True, "buffering": False},
                       {"path": "/lb", "to": ["app", "fast"], "balance": "sticky", "fail_timeout_seconds": 5}],
        },
        "app": {
            "kind": "gunicorn", "host": "127.0.0.1", "port": 18000, "workers": 2, "threads": 2,
            "timeout_seconds": 30, "worker_class": "sync", "listen": "unix",
            "app": {"module": "stackpanel.apps.flask_demo:app", "interface": "wsgi", "working_dir": ".",
                    "env": {"A": "1"}},
        },
        "fast": {
            "kind": "uvicorn", "host": "::1", "port": 18001, "workers": 1, "reload": False, "listen": "tcp",
            "app": {"module": "stackpanel.apps.fastapi_demo:app", "interface": "asgi", "env": {"B": "2"}},
        },
    },
}

STRUCTURAL = ";{}\"'\n\r\\$%#` <>*?[]|&\x00"

hostile_text = st.one_of(
    st.text(max_size=30),
    st.sampled_from(list(STRUCTURAL)).flatmap(
        lambda c: st.builds(lambda a, b: f"{a}{c}{b}", st.text(alphabet="/abc.:1", max_size=6),
                            st.text(alphabet="abc ;{}\n", max_size=6))),
    st.sampled_from([
        "fe80::1%eth0\nListen 0.0.0.0:9", "fe80::1%x;ProxyRequests On", "::1%lo", "::ffff:127.0.0.1",
        "127.0.0.1:80 0.0.0.0:81", "0.0.0.0", "::", "192.168.1.5", "${HOME}", "%{ENV:X}", "$http_host",
        "a\nInclude /etc/passwd", "/x\";\ninclude /etc/passwd;#", "/x\ninclude /etc/passwd", "'", "/..", "/../etc",
        "/", "/etc", "~root", "~nosuchuser/x", "*.evil.com", "evil.com;", "a" * 300, "\u2028", "\ufeff",
    ]),
)
hostile_value = st.one_of(
    hostile_text, st.integers(min_value=-(2**70), max_value=2**70), st.floats(), st.booleans(), st.none(),
    st.lists(hostile_text, max_size=3), st.dictionaries(hostile_text, hostile_text, max_size=2),
)


def leaves(data: Any, loc: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place a value sits, and every mapping (as a place for a hostile extra key)."""
    if isinstance(data, dict):
        yield loc + ("<key>",)
        for key, value in data.items():
            yield from leaves(value, loc + (key,))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from leaves(value, loc + (i,))
        yield loc + (len(data),)  # one more item
    else:
        yield loc


LEAVES = sorted(set(leaves(BASE)) - {("version",)}, key=repr)


def put(data: dict[str, Any], loc: tuple[Any, ...], value: Any) -> dict[str, Any]:
    """A copy of `data` with `value` at `loc` (a key at '<key>', an item appended past a list's end)."""
    copy = json.loads(json.dumps(data))
    target = copy
    for part in loc[:-1]:
        target = target[part]
    last = loc[-1]
    if last == "<key>":
        target[str(value)] = "x"
    elif isinstance(target, list) and last == len(target):
        target.append(value)
    else:
        target[last] = value
    return copy


#: Valid values of Literal fields: putting one of these at another place legitimately changes a config.
LITERALS = {"nginx", "apache", "gunicorn", "uvicorn", "asgi", "wsgi", "sync", "no", "on-failure", "always", "/",
            "round_robin", "least_conn", "ip_hash", "sticky", "auto", "tcp", "unix"}


def original(loc: tuple[Any, ...]) -> Any:
    """The base profile's value at `loc` (None where there is none)."""
    value: Any = BASE
    for part in loc:
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            return None
    return value


def only_injection_could_change_structure(loc: tuple[Any, ...], value: Any) -> bool:
    """True when `value` at `loc` may not change any config's structure: a string where a string
    (or a new key or item) stands. A typed value (a count, a flag, a kind) may change it by design,
    and "/" is the document root while any other prefix is an alias."""
    if loc[-1] == "<key>" and len(loc) > 1 and loc[-2] == "headers":
        return False  # a new header is a new add_header line, by design (its name and value are checked)
    return isinstance(value, str) and value not in LITERALS and original(loc) != "/" and (
        isinstance(original(loc), str) or loc[-1] == "<key>" or isinstance(loc[-1], int))


def skeleton_nginx(text: str) -> list[str]:
    """Directive names and block structure, with quoted strings, arguments and comments dropped."""
    text = re.sub(r"#[^\n]*", "", re.sub(r'"[^"\n]*"', "Q", re.sub(r"'[^'\n]*'", "Q", text)))
    out = []
    for stmt in re.split(r"([;{}])", text):
        words = stmt.split()
        if words:
            out.append(words[0])
        elif stmt in ";{}":
            out.append(stmt)
    return out


def skeleton_apache(text: str) -> Counter[str]:
    """Apache is line-based: the multiset of directive names (route order may differ legitimately)."""
    lines = [ln.strip() for ln in text.splitlines()]
    return Counter(ln.split()[0] for ln in lines if ln and not ln.startswith("#"))
