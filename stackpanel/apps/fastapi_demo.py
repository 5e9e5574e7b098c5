"""The demo ASGI app: the same endpoints as :mod:`stackpanel.apps.flask_demo`, for uvicorn.

Every endpoint answers both under ``/api`` (behind a proxy that routes ``/api`` to the app) and at
the root (the app alone, or a proxy that strips the prefix):

- ``/``, ``/api/``: hello JSON (``message``, ``app``, ``pid``)
- ``/hello``: the same, as cheap as possible (max-rate load tests)
- ``/wait?ms=N``: sleeps N ms without blocking the event loop (clamped to 0..10000)
- ``/cpu?ms=N``: burns N ms of CPU in a busy loop (clamped to 0..1000)
- ``/pid``: which worker served it (``pid``, ``ppid``)
- ``/headers``: the Host and forwarding headers the proxies set
- ``/events?n=N&ms=M``: N server-sent events, M ms apart (``X-Accel-Buffering: no``)
- ``/stream?n=N&ms=M``: N plain text lines, M ms apart, with no hint to proxies (a slow drip)
- ``/ws/echo``: a WebSocket that echoes every text message
- ``/status?code=N``: answers with status N (200..599, default 500): a request that fails on purpose
- ``/healthz``: readiness probe

Run: ``python -m uvicorn stackpanel.apps.fastapi_demo:app --host 127.0.0.1 --port 8000``.
"""
from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import Response, StreamingResponse

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

APP_NAME = "fastapi"

app = FastAPI(title="stackpanel demo (FastAPI)")


def _json(body: dict[str, Any]) -> Response:
    return Response(content=json.dumps(body), media_type="application/json")


def _routes(*suffixes: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a GET endpoint at each suffix, both at the root and under /api."""

    def register(endpoint: Callable[..., Any]) -> Callable[..., Any]:
        paths = dict.fromkeys(p for suffix in suffixes for p in (suffix or "/", "/api" + suffix))
        for path in paths:
            app.add_api_route(path, endpoint, methods=["GET"], include_in_schema=path.startswith("/api"))
        return endpoint

    return register


@_routes("", "/", "/hello")
async def hello() -> Response:
    return Response(content=hello_body(APP_NAME), media_type="application/json")


@_routes("/wait")
async def wait(ms: str | None = None) -> Response:
    n = clamp_ms(ms)
    await asyncio.sleep(n / 1000)
    return _json({"waited_ms": n, "pid": os.getpid()})


@_routes("/cpu")
def cpu(ms: str | None = None) -> Response:
    # A plain def runs in the threadpool: the loop keeps answering /healthz while this burns.
    n = clamp_ms(ms, MAX_CPU_MS)
    burn_cpu(n)
    return _json({"burned_ms": n, "pid": os.getpid()})


@_routes("/status")
async def status(code: str | None = None) -> Response:
    n = status_code(code)
    return Response(content=json.dumps({"status": n}), status_code=n, media_type="application/json")


@_routes("/pid")
async def pid() -> Response:
    return _json({"pid": os.getpid(), "ppid": os.getppid()})


@_routes("/headers")
async def headers(request: Request) -> Response:
    body: dict[str, Any] = {name: request.headers.get(name) for name in FORWARDED_HEADERS}
    body["client"] = request.client.host if request.client else None
    body["root_path"] = request.scope.get("root_path", "")
    body["pid"] = os.getpid()
    return _json(body)


def _paced(chunk: Callable[[int], bytes], n: int, ms: int) -> AsyncIterator[bytes]:
    async def generate() -> AsyncIterator[bytes]:
        for i in range(n):
            if i:
                await asyncio.sleep(ms / 1000)
            yield chunk(i)

    return generate()


@_routes("/events")
async def events(n: str | None = None, ms: str | None = None) -> StreamingResponse:
    return StreamingResponse(_paced(event_chunk, clamp_count(n), clamp_ms(ms)), media_type="text/event-stream",
                             headers=EVENT_HEADERS)


@_routes("/stream")
async def stream(n: str | None = None, ms: str | None = None) -> StreamingResponse:
    return StreamingResponse(_paced(drip_chunk, clamp_count(n), clamp_ms(ms)), media_type="text/plain")


async def ws_echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            await websocket.send_text(await websocket.receive_text())
    except WebSocketDisconnect:
        pass


for _path in ("/ws/echo", "/api/ws/echo"):
    app.add_api_websocket_route(_path, ws_echo)


@_routes("/healthz")
async def healthz() -> Response:
    return Response(content=HEALTHZ_BODY, media_type="application/json")
