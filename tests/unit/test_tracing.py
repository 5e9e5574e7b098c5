"""The live trace collector (core/metrics/tracing.py) fed through the metrics engine's own ingest,
and the OTLP/JSON encoding (core/metrics/otlp.py) checked against the spec's shape."""
from __future__ import annotations

import json
import re
from pathlib import Path

from stackpanel.core.metrics import MetricsEngine
from stackpanel.core.metrics.otlp import to_otlp, trace_id, write_otlp
from stackpanel.core.metrics.synthetic import trace_lines
from stackpanel.core.metrics.tracing import TraceCollector, TraceQuery, trace_to_json

PATH3 = [("edge", "nginx", 11, "web"), ("web", "apache", 22, "app"), ("app", "gunicorn", 33, "-")]
T0 = 1_750_000_000.0


def collector(**kw) -> TraceCollector:
    c = TraceCollector("edge", **kw)
    for n in ("edge", "web", "app"):
        c.add_node(n)
    return c


def feed(c: TraceCollector, lines: list[tuple[str, str]], now: float, order: tuple[str, ...] = ("app", "web", "edge")):
    for node in order:
        mine = [ln.encode() for n, ln in lines if n == node]
        c.feed(node, mine, now)
    c.complete(now)
    c.publish()


def test_a_request_through_three_tiers_becomes_one_trace_nested() -> None:
    c = collector()
    got = []
    c.subscribe(got.append)
    feed(c, trace_lines("rid-1", PATH3, start=T0, duration=0.050, path="/api/x?y=1"), now=1.0)
    assert [t.request_id for t in got] == ["rid-1"]
    t = got[0]
    assert t.nodes == ("edge", "web", "app") and not t.missing
    assert [s.pid for s in t.spans] == [11, 22, 33]
    assert t.path == "/api/x" and t.status == 200 and not t.failed
    for outer, inner in zip(t.spans, t.spans[1:], strict=False):
        assert inner.start >= outer.start - 0.0015 and inner.duration <= outer.duration
    assert abs(t.own_time(0) - 0.001) < 0.0011 and t.own_time(2) == t.spans[2].duration
    assert t.hop_time(0) is not None and t.hop_time(2) is None
    assert c.get("rid-1") is t
    doc = trace_to_json(t)
    assert json.loads(json.dumps(doc))["spans"][1]["node"] == "web" and doc["path"] == "/api/x"


def test_the_entry_line_first_waits_for_the_inner_tiers_then_missing_ones_are_named() -> None:
    c = collector()
    lines = trace_lines("late", PATH3, start=T0, duration=0.02)
    feed(c, lines, now=1.0, order=("edge",))
    assert c.get("late") is None and c.sizes()["waiting"] == 1  # gunicorn and Apache log after the response
    feed(c, lines, now=1.1, order=("web", "app"))
    assert c.get("late").nodes == ("edge", "web", "app")
    feed(c, trace_lines("lost", PATH3, start=T0, duration=0.02)[:2], now=2.0, order=("edge", "web"))
    feed(c, [], now=2.0 + c.keep_s + 0.1)
    lost = c.get("lost")
    assert lost is not None and lost.nodes == ("edge", "web") and lost.missing == ("app",)
    assert "no line from app" in lost.format()


def test_inner_lines_without_an_entry_line_expire_and_stay_bounded() -> None:
    c = collector(pending_max=1000)
    for k in range(30):
        lines = [ln for i in range(100) for n, ln in trace_lines(f"x{k}-{i}", PATH3, start=T0, duration=0.01)
                 if n == "app"]
        c.feed("app", [ln.encode() for ln in lines], now=float(k))
        assert c.sizes()["pending_lines"] <= 1000
    assert c.sizes()["pending_lines"] <= 100 * (c.keep_s + 1)


def test_under_load_a_bounded_sample_plus_every_failed_and_the_slowest() -> None:
    c = collector(recent_max=50, slowest_max=5, failed_max=1000, sample_per_chunk=8)
    slowest = []
    failed = []
    for tick in range(20):
        lines = []
        for i in range(500):
            rid = f"t{tick}-{i}"
            duration = 0.001 + (i % 97) * 1e-5
            status = 200
            if i == 250 and tick % 4 == 0:
                duration = 0.5 + tick * 0.01  # a slow one now and then
                slowest.append(rid)
            if i % 100 == 7:
                status = 500
                failed.append(rid)
            lines += trace_lines(rid, PATH3, start=T0 + tick, duration=duration, status=status)
        feed(c, lines, now=float(tick))
    sizes = c.sizes()
    assert sizes["recent"] == 50 and sizes["failed"] == len(failed) and sizes["slowest"] == 5
    assert [t.request_id for t in c.slowest()] == list(reversed(slowest))
    assert {t.request_id for t in c.failed()} == set(failed)
    assert all(t.nodes == ("edge", "web", "app") for t in c.traces())
    assert len(c.traces()) <= 50 + 5 + len(failed)


def test_queries_filter_by_path_status_node_duration_and_id() -> None:
    c = collector()
    split = [("edge", "nginx", 11, "static")]
    lines = (trace_lines("a-1", PATH3, start=T0, duration=0.2, path="/api/slow")
             + trace_lines("b-2", PATH3, start=T0 + 1, duration=0.01, status=502, path="/api/boom")
             + trace_lines("c-3", split, start=T0 + 2, duration=0.001, path="/index.html"))
    feed(c, lines, now=1.0)
    ids = lambda **kw: [t.request_id for t in c.query(TraceQuery(**kw))]  # noqa: E731
    assert ids() == ["c-3", "b-2", "a-1"]  # newest first
    assert ids(path="/api") == ["b-2", "a-1"]
    assert ids(status="5xx") == ["b-2"] and ids(status="failed") == ["b-2"] and ids(status="200") == ["c-3", "a-1"]
    assert ids(node="app") == ["b-2", "a-1"] and ids(node="edge") == ["c-3", "b-2", "a-1"]
    assert ids(min_duration=0.1) == ["a-1"]
    assert ids(request_id="b-") == ["b-2"]
    assert c.get("c-3").nodes == ("edge",)


def test_the_engine_feeds_the_collector_from_its_own_tail(tmp_path: Path) -> None:
    logs = {n: tmp_path / f"{n}.access.log" for n in ("edge", "web", "app")}
    c = TraceCollector("edge")
    engine = MetricsEngine(traces=c)
    for n, p in logs.items():
        p.write_text("")
        engine.register_node(n, "x", p)
    got = []
    c.subscribe(got.append)
    for n, line in trace_lines("via-engine", PATH3, start=T0, duration=0.03):
        with open(logs[n], "a") as fh:
            fh.write(line + "\n")
    snap = engine.tick()
    assert snap.node("edge").requests_total == 1  # the counts and the trace came from one read
    assert [t.nodes for t in got] == [("edge", "web", "app")]
    engine.restart_counts()
    assert c.traces() == ()
    engine.close()


# --------------------------------------------------------------------------------------------------
# OTLP/JSON: the shape of opentelemetry-proto trace/v1 TracesData in the JSON encoding
# --------------------------------------------------------------------------------------------------

HEX = re.compile(r"[0-9a-f]+")
SPAN_FIELDS = {"traceId", "spanId", "parentSpanId", "name", "kind", "startTimeUnixNano", "endTimeUnixNano",
               "attributes", "status"}
VALUE_KINDS = {"stringValue", "intValue", "boolValue", "doubleValue", "arrayValue", "kvlistValue", "bytesValue"}


def check_any_value(v: dict) -> None:
    assert len(v) == 1 and next(iter(v)) in VALUE_KINDS, v
    if "intValue" in v:
        assert isinstance(v["intValue"], str) and int(v["intValue"]) >= 0  # int64 as a decimal string
    if "arrayValue" in v:
        for item in v["arrayValue"]["values"]:
            check_any_value(item)


def check_attributes(attrs: list) -> dict:
    keys = [a["key"] for a in attrs]
    assert len(keys) == len(set(keys))
    for a in attrs:
        assert set(a) == {"key", "value"}
        check_any_value(a["value"])
    return {a["key"]: a["value"] for a in attrs}


def test_otlp_json_has_the_spec_shape(tmp_path: Path) -> None:
    c = collector()
    feed(c, trace_lines("0af7651916cd43dd8448eb211c80319c", PATH3, start=T0, duration=0.05, path="/api/x?q=1")
         + trace_lines("client-tagged-1", PATH3, start=T0 + 1, duration=0.02, status=500), now=1.0)
    out = tmp_path / "traces.otlp.json"
    assert write_otlp(c.traces(), out) == 2
    doc = json.loads(out.read_text())
    assert set(doc) == {"resourceSpans"}
    services = []
    spans = {}
    for rs in doc["resourceSpans"]:
        assert set(rs) == {"resource", "scopeSpans"}
        services.append(check_attributes(rs["resource"]["attributes"])["service.name"]["stringValue"])
        for ss in rs["scopeSpans"]:
            assert set(ss) == {"scope", "spans"} and ss["scope"]["name"]
            for s in ss["spans"]:
                assert set(s) <= SPAN_FIELDS and SPAN_FIELDS - {"parentSpanId"} <= set(s)
                assert len(s["traceId"]) == 32 and HEX.fullmatch(s["traceId"]) and set(s["traceId"]) != {"0"}
                assert len(s["spanId"]) == 16 and HEX.fullmatch(s["spanId"])
                assert isinstance(s["startTimeUnixNano"], str) and isinstance(s["endTimeUnixNano"], str)
                assert int(s["startTimeUnixNano"]) <= int(s["endTimeUnixNano"])
                assert abs(int(s["startTimeUnixNano"]) / 1e9 - T0) < 5  # unix nanos, not seconds or micros
                assert s["kind"] == 2  # SPAN_KIND_SERVER, an enum as its integer
                attrs = check_attributes(s["attributes"])
                assert {"http.request.method", "url.path", "http.response.status_code"} <= set(attrs)
                assert s["status"]["code"] in (0, 1, 2)
                spans[s["spanId"]] = (rs, s)
    assert sorted(services) == ["app", "edge", "web"]  # one resource (service) per node
    # nesting: every parent exists, in the same trace, on the node in front; the root has none
    roots = [s for _, s in spans.values() if "parentSpanId" not in s]
    assert len(roots) == 2
    for _, s in spans.values():
        if "parentSpanId" in s:
            parent = spans[s["parentSpanId"]][1]
            assert parent["traceId"] == s["traceId"]
            assert int(parent["startTimeUnixNano"]) <= int(s["startTimeUnixNano"])
    assert {s["traceId"] for s in roots} == {"0af7651916cd43dd8448eb211c80319c", trace_id("client-tagged-1")}
    failed = [s for _, s in spans.values() if s["traceId"] == trace_id("client-tagged-1")]
    assert all(s["status"]["code"] == 2 for s in failed)
    first = next(s for s in roots if s["traceId"].startswith("0af7"))
    attrs = check_attributes(first["attributes"])
    assert attrs["url.path"] == {"stringValue": "/api/x"} and attrs["url.query"] == {"stringValue": "q=1"}
    assert attrs["http.response.status_code"] == {"intValue": "200"} and first["name"] == "GET /api/x"


def test_otlp_of_nothing_is_an_empty_document() -> None:
    assert to_otlp([]) == {"resourceSpans": []}


def test_a_finished_runs_logs_assemble_like_the_live_collector(tmp_path: Path) -> None:
    from stackpanel.core.traces import entry_of, traces_from_logs

    logs = tmp_path / "logs"
    logs.mkdir()
    lines = [ln for i in range(30) for ln in trace_lines(f"r{i}", PATH3, start=T0 + i, duration=0.01 + i / 1000)]
    lines += trace_lines("static", [("edge", "nginx", 11, "static")], start=T0 + 40, duration=0.001)
    for node in ("edge", "web", "app"):
        (logs / f"{node}.access.log").write_text("".join(ln + "\n" for n, ln in lines if n == node))
    assert entry_of(logs) == "edge"
    traces = traces_from_logs(logs, limit=10)
    assert [t.request_id for t in traces] == ["static", *(f"r{i}" for i in range(29, 20, -1))]
    assert traces[1].nodes == ("edge", "web", "app") and traces[0].nodes == ("edge",)
    assert traces_from_logs(tmp_path) == ()  # no logs, no entry
