"""Qt-free metrics: access-log ingest, psutil process sampling, ring buffers, the engine."""
from __future__ import annotations

from stackpanel.core.metrics.engine import (
    EdgeMetrics,
    MetricsEngine,
    MetricsSnapshot,
    NodeHistory,
    NodeMetrics,
    WorkerHistory,
    WorkerMetrics,
    snapshot_to_json,
)
from stackpanel.core.metrics.ingest import AccessLogIngest, IngestBatch, LogTailer, parse_chunk
from stackpanel.core.metrics.ringbuffer import TimeSeriesRing, capacity_for
from stackpanel.core.metrics.sampler import ProcessSample, ProcessSampler

__all__ = [
    "AccessLogIngest",
    "EdgeMetrics",
    "IngestBatch",
    "LogTailer",
    "MetricsEngine",
    "MetricsSnapshot",
    "NodeHistory",
    "NodeMetrics",
    "ProcessSample",
    "ProcessSampler",
    "TimeSeriesRing",
    "WorkerHistory",
    "WorkerMetrics",
    "capacity_for",
    "parse_chunk",
    "snapshot_to_json",
]
