"""Written into a run directory by stackpanel: wraps an ASGI app so that every request is logged in
stackpanel's one access-log format, with its duration and request id (uvicorn's own access log has
neither). It imports nothing of stackpanel: the app server may run in the user's own venv.

    <pid> <status> <seconds> - <request id> <method> "<path?query>" <end time, epoch seconds>

The app is named by STACKPANEL_APP (module:attribute), imported from STACKPANEL_APP_DIR;
STACKPANEL_APP_FACTORY=1 calls it first. Lines go to the "stackpanel.access" logger, which the
rendered log config sends to the node's access log. It also works around uvicorn#3149 (below).
"""
from __future__ import annotations

import importlib
import logging
import os
import sys
import time
from typing import Any

_log = logging.getLogger("stackpanel.access")


def _nodelay_on_shared_sockets() -> None:
    """uvicorn --workers N (N ≥ 2) hands each worker a socket rebuilt from a file descriptor whose
    `proto` reads 0, and asyncio only sets TCP_NODELAY when proto is IPPROTO_TCP (uvicorn#3149):
    a response written in several chunks then waits ~40 ms on a reused connection (Nagle + delayed
    ACK), and a proxy's keepalive pool reuses every connection. uvloop is not affected. A socket
    handed over with --fd is rebuilt as AF_UNIX (uvicorn's fromfd), so the family cannot tell TCP
    apart either: set the option and let a real Unix socket refuse it."""
    import asyncio.base_events
    import socket

    if not hasattr(socket, "TCP_NODELAY"):
        return

    def set_nodelay(sock: socket.socket) -> None:
        if sock.type == socket.SOCK_STREAM:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass  # a Unix socket

    asyncio.base_events._set_nodelay = set_nodelay  # type: ignore[attr-defined]


_nodelay_on_shared_sockets()


def _load() -> Any:
    app_dir = os.environ.get("STACKPANEL_APP_DIR")
    if app_dir and app_dir not in sys.path:
        sys.path.insert(0, app_dir)
    module, _, attribute = os.environ["STACKPANEL_APP"].partition(":")
    target: Any = importlib.import_module(module)
    for part in attribute.split("."):
        target = getattr(target, part)
    return target() if os.environ.get("STACKPANEL_APP_FACTORY") == "1" else target


_app = _load()


def _request_id(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if text and " " not in text else "-"
    return "-"


_ws_dir = os.environ.get("STACKPANEL_WS_DIR")
_ws_open = 0


def _count_websockets(delta: int) -> None:
    """This worker's open WebSockets, in a file named after its pid that stackpanel's live view
    reads (they are long-lived: a request count alone never shows them)."""
    global _ws_open
    _ws_open += delta
    if not _ws_dir:
        return
    path = os.path.join(_ws_dir, str(os.getpid()))
    try:
        with open(path + ".tmp", "w") as fh:
            fh.write(str(_ws_open))
        os.replace(path + ".tmp", path)
    except OSError:
        pass  # the count is for the live view only


async def _websocket(scope: dict[str, Any], receive: Any, send: Any) -> None:
    start = time.perf_counter()
    accepted = False

    async def send_and_watch(message: dict[str, Any]) -> None:
        nonlocal accepted
        if message["type"] == "websocket.accept" and not accepted:
            accepted = True
            _count_websockets(+1)
        await send(message)

    try:
        await _app(scope, receive, send_and_watch)
    finally:
        if accepted:
            _count_websockets(-1)
        path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        _log.info('%d %03d %.6f - %s WS "%s" %.6f', os.getpid(), 101 if accepted else 403,
                  time.perf_counter() - start, _request_id(scope.get("headers", [])), path, time.time())


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":
        await _websocket(scope, receive, send)
        return
    if scope["type"] != "http":
        await _app(scope, receive, send)
        return
    start = time.perf_counter()
    status = 0

    async def send_and_watch(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        await send(message)

    try:
        await _app(scope, receive, send_and_watch)
    finally:
        query = scope.get("query_string") or b""
        target = scope.get("raw_path") or scope["path"].encode()
        if query:
            target += b"?" + query
        _log.info('%d %03d %.6f - %s %s "%s" %.6f', os.getpid(), status or 500, time.perf_counter() - start,
                  _request_id(scope.get("headers", [])), scope.get("method", "-"), target.decode("latin-1"),
                  time.time())
