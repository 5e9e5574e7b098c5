"""The demo WSGI app: the same endpoints as :mod:`stackpanel.apps.fastapi_demo`, for gunicorn.

Every endpoint answers both under ``/api`` and at the root; see the FastAPI module for the list.
``/wait`` blocks the worker (``time.sleep``), as a sync WSGI worker would; so does a stream. WSGI has
no WebSockets: ``/ws/echo`` is the ASGI app's only.

Run: ``python -m gunicorn --no-control-socket -b 127.0.0.1:8000 stackpanel.apps.flask_demo:app``.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from flask import Flask, Response, request, stream_with_context
from werkzeug.middleware.proxy_fix import ProxyFix

from stackpanel.apps.common import (
    EVENT_HEADERS,
    FORWARDED_HEADERS,
    HEALTHZ_BODY,
    MAX_CPU_MS,
    burn_cpu,
    clamp_count,
    clamp_ms,
    drip_chunk,
    event_chunk,
    hello_body,
    status_code,
)

APP_NAME = "flask"

app = Flask(__name__, static_folder=None)  # the static site is the proxy's job
# Behind a route with strip_prefix the proxy says which prefix it removed; a WSGI app learns it
# from X-Forwarded-Prefix (the app's own choice: gunicorn's SCRIPT_NAME would refuse other paths).
app.wsgi_app = ProxyFix(app.wsgi_app, x_for=0, x_proto=0, x_host=0, x_port=0, x_prefix=1)  # type: ignore[method-assign]


def _json(body: dict[str, Any]) -> Response:
    return Response(json.dumps(body), mimetype="application/json")


def _routes(*suffixes: str) -> Callable[[Callable[[], Response]], Callable[[], Response]]:
    """Register a GET endpoint at each suffix, both at the root and under /api."""

    def register(view: Callable[[], Response]) -> Callable[[], Response]:
        for suffix in suffixes:
            for path in (suffix or "/", "/api" + suffix):
                app.add_url_rule(path, endpoint=f"{view.__name__}:{path}", view_func=view,
                                 methods=["GET"], strict_slashes=False)
        return view

    return register


@_routes("/", "/hello")
def hello() -> Response:
    return Response(hello_body(APP_NAME), mimetype="application/json")


@_routes("/wait")
def wait() -> Response:
    n = clamp_ms(request.args.get("ms"))
    time.sleep(n / 1000)
    return _json({"waited_ms": n, "pid": os.getpid()})


@_routes("/cpu")
def cpu() -> Response:
    n = clamp_ms(request.args.get("ms"), MAX_CPU_MS)
    burn_cpu(n)
    return _json({"burned_ms": n, "pid": os.getpid()})


@_routes("/status")
def status() -> Response:
    n = status_code(request.args.get("code"))
    return Response(json.dumps({"status": n}), status=n, mimetype="application/json")


@_routes("/pid")
def pid() -> Response:
    return _json({"pid": os.getpid(), "ppid": os.getppid()})


@_routes("/headers")
def headers() -> Response:
    body: dict[str, Any] = {name: request.headers.get(name) for name in FORWARDED_HEADERS}
    body["client"] = request.remote_addr
    body["root_path"] = request.script_root
    body["pid"] = os.getpid()
    return _json(body)


def _paced(chunk: Callable[[int], bytes]) -> Iterator[bytes]:
    n, ms = clamp_count(request.args.get("n")), clamp_ms(request.args.get("ms"))
    for i in range(n):
        if i:
            time.sleep(ms / 1000)
        yield chunk(i)


@_routes("/events")
def events() -> Response:
    return Response(stream_with_context(_paced(event_chunk)), mimetype="text/event-stream", headers=EVENT_HEADERS)


@_routes("/stream")
def stream() -> Response:
    return Response(stream_with_context(_paced(drip_chunk)), mimetype="text/plain")


@_routes("/healthz")
def healthz() -> Response:
    return Response(HEALTHZ_BODY, mimetype="application/json")
