"""Traces in the OpenTelemetry JSON encoding (OTLP/JSON ``TracesData``), for Jaeger or any OTLP-file reader.

The shape follows opentelemetry-proto's ``trace/v1/trace.proto`` with the OTLP JSON rules
(docs/specification.md, "JSON Protobuf Encoding"): lowerCamelCase field names, trace and span ids
as hex strings (32 and 16 digits, not base64), 64-bit integers (times in unix nanoseconds,
``intValue``) as decimal strings, enums as integers.

One ``resourceSpans`` entry per node (``service.name`` = the node); each tier's span is a SERVER
span whose parent is the tier in front of it.
The trace id is the request id when it already is 32 hex digits (nginx's ``$request_id``), else a
hash of it; span ids hash the request id and the node, so the same request always gets the same ids.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from stackpanel import __version__
from stackpanel.core.metrics.tracing import Span, Trace

SPAN_KIND_SERVER = 2
STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2
_HEX32 = re.compile(r"[0-9a-f]{32}")


def trace_id(request_id: str) -> str:
    rid = request_id.lower()
    if _HEX32.fullmatch(rid) and rid != "0" * 32:
        return rid
    return hashlib.sha256(request_id.encode()).hexdigest()[:32]


def span_id(request_id: str, node: str) -> str:
    digest = hashlib.sha256(f"{request_id}\0{node}".encode()).hexdigest()[:16]
    return digest if digest != "0" * 16 else "0" * 15 + "1"


def _str(key: str, value: str) -> dict[str, Any]:
    return {"key": key, "value": {"stringValue": value}}


def _int(key: str, value: int) -> dict[str, Any]:
    return {"key": key, "value": {"intValue": str(value)}}


def _nanos(seconds: float) -> str:
    return str(round(seconds * 1e9))


def _span(trace: Trace, i: int, tid: str) -> dict[str, Any]:
    s: Span = trace.spans[i]
    path, _, query = s.target.partition("?")
    attributes = [
        _str("http.request.method", s.method),
        _str("url.path", path),
        _int("http.response.status_code", s.status),
        _int("process.pid", s.pid),
        {"key": "http.request.header.x-request-id",
         "value": {"arrayValue": {"values": [{"stringValue": trace.request_id}]}}},
        _str("stackpanel.route", s.route),
    ]
    if query:
        attributes.insert(2, _str("url.query", query))
    # semantic conventions (HTTP server spans): 5xx is an error, anything lower leaves the status unset
    status: dict[str, Any] = ({"code": STATUS_ERROR, "message": f"HTTP {s.status}"} if s.status >= 500
                              else {"code": STATUS_UNSET})
    span: dict[str, Any] = {
        "traceId": tid,
        "spanId": span_id(trace.request_id, s.node),
        "name": f"{s.method} {path}" if s.method else path,
        "kind": SPAN_KIND_SERVER,
        "startTimeUnixNano": _nanos(s.start),
        "endTimeUnixNano": _nanos(s.end),
        "attributes": attributes,
        "status": status,
    }
    if i:
        span["parentSpanId"] = span_id(trace.request_id, trace.spans[i - 1].node)
    return span


def to_otlp(traces: Iterable[Trace]) -> dict[str, Any]:
    """A ``TracesData`` object (``{"resourceSpans": [...]}``): one resource per node, its spans of every trace."""
    by_node: dict[str, list[dict[str, Any]]] = {}
    for trace in traces:
        tid = trace_id(trace.request_id)
        for i, s in enumerate(trace.spans):
            by_node.setdefault(s.node, []).append(_span(trace, i, tid))
    return {"resourceSpans": [
        {"resource": {"attributes": [_str("service.name", node), _str("telemetry.sdk.name", "stackpanel")]},
         "scopeSpans": [{"scope": {"name": "stackpanel.access-logs", "version": __version__}, "spans": spans}]}
        for node, spans in by_node.items()
    ]}


def write_otlp(traces: Iterable[Trace], path: Path) -> int:
    """Write ``traces`` as one OTLP/JSON document to ``path``; returns the number of traces."""
    kept = list(traces)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_otlp(kept)) + "\n", encoding="utf-8")
    return len(kept)
