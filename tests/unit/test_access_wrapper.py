"""The ASGI access wrapper that every uvicorn tier runs in: one canonical access-log line per
request, with its duration and request id, and nothing else changed about the app."""
from __future__ import annotations

import asyncio
import importlib.util
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from stackpanel.core import logformat
from stackpanel.core.metrics.ingest import parse_latency
from stackpanel.core.render.appservers import _ACCESS_WRAPPER_SOURCE, ACCESS_WRAPPER


@pytest.fixture
def wrapper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    (tmp_path / "myapp.py").write_text(
        "async def app(scope, receive, send):\n"
        "    if scope['type'] == 'lifespan':\n"
        "        return\n"
        "    status = 404 if scope['path'] == '/missing' else 200\n"
        "    await send({'type': 'http.response.start', 'status': status, 'headers': []})\n"
        "    await send({'type': 'http.response.body', 'body': b'ok'})\n")
    monkeypatch.setenv("STACKPANEL_APP", "myapp:app")
    monkeypatch.setenv("STACKPANEL_APP_DIR", str(tmp_path))
    source = tmp_path / f"{ACCESS_WRAPPER}.py"
    source.write_text(_ACCESS_WRAPPER_SOURCE)
    spec = importlib.util.spec_from_file_location("wrapper_under_test", source)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _call(app: Any, path: str, headers: list[tuple[bytes, bytes]], query: bytes = b"") -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(), "query_string": query,
             "headers": headers}
    asyncio.run(app(scope, receive, send))
    return sent


def test_every_request_is_one_canonical_line(wrapper: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="stackpanel.access")
    sent = _call(wrapper.app, "/hello", [(b"x-request-id", b"abc123")], b"a=1")
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]  # the app's own messages
    _call(wrapper.app, "/missing", [])
    first, second = [r.getMessage() for r in caplog.records]
    pid, status, seconds, route, request_id, rest = first.split(" ", 5)
    request, end = rest.rsplit(" ", 1)
    assert (status, route, request_id, request) == ("200", logformat.APP_ROUTE, "abc123", 'GET "/hello?a=1"')
    assert abs(float(end) - time.time()) < 60  # when it finished (for traces)
    latency = parse_latency(seconds.encode())
    assert int(pid) > 0 and latency is not None and 0 <= latency < 1
    assert second.split(" ")[1] == "404" and second.split(" ")[4] == "-"


def test_lifespan_passes_through_unlogged(wrapper: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="stackpanel.access")

    async def receive() -> dict[str, Any]:
        return {"type": "lifespan.startup"}

    async def send(message: dict[str, Any]) -> None:
        pass

    asyncio.run(wrapper.app({"type": "lifespan"}, receive, send))
    assert caplog.records == []
