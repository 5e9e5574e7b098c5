from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stackpanel.core.metrics.ingest import AccessLogIngest, LogTailer, parse_chunk, parse_latency
from stackpanel.core.metrics.synthetic import access_line, random_lines


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def lines_of(chunks: list[bytes]) -> list[bytes]:
    out: list[bytes] = []
    for c in chunks:
        assert c.endswith(b"\n")
        out.extend(c.split(b"\n")[:-1])
    return out


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


# -- parsing ---------------------------------------------------------------------------------------


def test_parses_all_four_tier_variants() -> None:
    text = "\n".join(
        [
            access_line("nginx", 101, 200, 0.0123, "apache", "abc", path="/api/items", query="id=1"),
            access_line("nginx", 101, 502, 0.5, "apache", "abd"),
            access_line("nginx", 102, 200, 0.001, "static", "abe", path="/static/app.css"),
            access_line("apache", 201, 200, 0.002815, "gunicorn", "abc"),
            access_line("apache", 201, 503, 1.25, "gunicorn", "-"),
            access_line("gunicorn", 301, 404, 0.000731, "-", "abc"),
            access_line("uvicorn", 401, 200, 0.0, "-", path="/healthz"),
        ]
    ).encode() + b"\n"
    b = parse_chunk(text)
    assert b.lines == 7 and b.unparseable == 0
    assert b.by_pid == {101: 2, 102: 1, 201: 2, 301: 1, 401: 1}
    assert b.by_status == {"2xx": 4, "5xx": 2, "4xx": 1}
    assert b.by_pid_status[(101, "5xx")] == 1 and b.by_pid_status[(101, "2xx")] == 1
    assert b.by_route == {"apache": 2, "static": 1, "gunicorn": 2, "-": 2}
    assert b.errors_by_route == {"apache": 1, "gunicorn": 1}
    # uvicorn has no duration; nginx has ms resolution, apache whole microseconds
    assert sorted(b.latencies.tolist()) == pytest.approx(sorted([0.012, 0.5, 0.001, 0.002815, 1.25, 0.000731]))
    assert b.latency_weight == 1.0


def test_parse_latency_forms() -> None:
    assert parse_latency(b"0.004") == pytest.approx(0.004)
    assert parse_latency(b"2815us") == pytest.approx(0.002815)
    assert parse_latency(b"-") is None
    assert parse_latency(b"abcus") is None
    assert parse_latency(b"-1.0") is None


def test_garbage_lines_are_counted_and_skipped() -> None:
    good = access_line("nginx", 7, 200, 0.001, "app", "x")
    data = b"\n".join(
        [
            good.encode(),
            b"",  # blank: ignored, not garbage
            b"hello world",  # too few fields
            b"abc 200 0.1 app x GET /",  # pid not a number
            b"12 20 0.1 app x GET /",  # status not 3 digits
            b"12 2x0 0.1 app x GET /",
            b"12  200 0.1 app",  # double space: empty field
            b"\xff\xfe\x00 binary \x01",
            good.encode(),
            b"\r",  # whitespace only: blank
        ]
    ) + b"\n"
    b = parse_chunk(data)
    assert b.lines == 2
    assert b.unparseable == 6
    assert b.by_pid == {7: 2}
    assert b.latencies.tolist() == [0.001, 0.001]  # garbage never pollutes the latency sample


def test_sample_is_bounded_and_weighted() -> None:
    data = b"".join(b"5 200 0.010 r - GET /\n" for _ in range(10_000))
    b = parse_chunk(data, latency_sample_max=100)
    assert b.lines == 10_000
    assert 90 <= b.latencies.size <= 100
    assert b.latency_weight == 100.0
    assert np.all(b.latencies == 0.010)


def test_crlf_route_is_clean() -> None:
    b = parse_chunk(b"5 200 0.1 api\r\n")
    assert b.by_route == {"api": 1}


# -- tailing ---------------------------------------------------------------------------------------


def test_missing_file_then_created(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    t = LogTailer(path)
    assert t.read() == []
    assert not t.is_open
    append(path, b"1 200 0.1 a x\n")
    assert lines_of(t.read()) == [b"1 200 0.1 a x"]
    t.close()


def test_partial_lines_are_carried_over(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    t = LogTailer(path)
    append(path, b"1 200 0.1 a x\n2 200 0.")
    assert lines_of(t.read()) == [b"1 200 0.1 a x"]
    append(path, b"2")
    assert t.read() == []
    append(path, b" b y\n3 500 0.3 c z")
    assert lines_of(t.read()) == [b"2 200 0.2 b y"]
    append(path, b"\n")
    assert lines_of(t.read()) == [b"3 500 0.3 c z"]
    assert t.read() == []
    t.close()


def test_rotation_by_rename_drains_old_file(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    clock = FakeClock()
    t = LogTailer(path, clock=clock, drain_grace_s=2.0)
    with open(path, "ab", buffering=0) as writer:  # the server's fd, kept across the rename
        writer.write(b"1 200 0.1 a old1\n")
        assert lines_of(t.read()) == [b"1 200 0.1 a old1"]
        old_inode = t.inode

        os.rename(path, tmp_path / "access.log.1")
        writer.write(b"1 200 0.1 a old2\n1 200 0.1 a old-partial")  # still writing to the old file
        append(path, b"2 200 0.1 a new1\n")
        got = lines_of(t.read())
        assert got == [b"1 200 0.1 a old2", b"2 200 0.1 a new1"]  # old file first
        assert t.rotations == 1 and t.inode != old_inode

        writer.write(b"-tail\n")  # the server finishes its line before reopening
    clock.t = 1.0
    assert lines_of(t.read()) == [b"1 200 0.1 a old-partial-tail"]
    clock.t = 5.0
    assert t.read() == []  # old file closed after the grace period
    assert len(t._draining) == 0
    append(path, b"2 200 0.1 a new2\n")
    assert lines_of(t.read()) == [b"2 200 0.1 a new2"]
    t.close()


def test_rotation_old_file_unterminated_last_line_is_emitted(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    clock = FakeClock()
    t = LogTailer(path, clock=clock, drain_grace_s=1.0)
    append(path, b"1 200 0.1 a x\n1 200 0.1 a crashed")
    assert len(lines_of(t.read())) == 1
    os.rename(path, tmp_path / "access.log.1")
    assert t.read() == []  # path missing: the old file is still the current one (may be written)
    clock.t = 5.0
    assert t.read() == []
    append(path, b"2 200 0.1 a new\n")  # the new file appears: old one drains, then closes
    assert lines_of(t.read()) == [b"2 200 0.1 a new"]
    clock.t = 7.0
    assert lines_of(t.read()) == [b"1 200 0.1 a crashed"]
    t.close()


def test_copy_truncate(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    t = LogTailer(path)
    append(path, b"".join(b"1 200 0.1 a line%d\n" % i for i in range(10)))
    assert len(lines_of(t.read())) == 10
    shutil.copy(path, tmp_path / "access.log.1")
    with open(path, "r+b") as f:
        f.truncate(0)
    append(path, b"1 200 0.1 a after1\n1 200 0.1 a after2\n")
    assert lines_of(t.read()) == [b"1 200 0.1 a after1", b"1 200 0.1 a after2"]
    assert t.truncations == 1 and t.rotations == 0
    t.close()


def test_start_at_end_skips_existing_and_half_line(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    append(path, b"1 200 0.1 a old\n1 200 0.1 a half")
    t = LogTailer(path, start_at_end=True)
    assert t.read() == []
    append(path, b"-line\n1 200 0.1 a fresh\n")
    assert lines_of(t.read()) == [b"1 200 0.1 a fresh"]
    t.close()


def test_ingest_poll_accumulates_totals(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    ing = AccessLogIngest(path)
    assert ing.poll().lines == 0
    append(path, b"1 200 0.1 a x\n2 500 0.1 a x\ngarbage\n")
    b = ing.poll()
    assert (b.lines, b.unparseable) == (2, 1)
    append(path, b"1 200 0.1 b x\n")
    assert ing.poll().by_route == {"b": 1}
    assert ing.totals.by_pid == {1: 2, 2: 1}
    assert ing.totals.by_route == {"a": 2, "b": 1}
    assert ing.totals.errors_by_route == {"a": 1}
    assert ing.totals.unparseable == 1
    ing.close()


# -- truth: exact counts whatever the chunk boundaries ----------------------------------------------

N_LINES = 10_000
PIDS = {"nginx": (11, 12), "apache": (21, 22, 23), "gunicorn": (31, 32), "uvicorn": (41,)}
_RECORDS = list(random_lines(N_LINES, pids=PIDS, seed=42, error_rate=0.05))  # type: ignore[arg-type]
_DATA = "".join(r[4] + "\n" for r in _RECORDS).encode()
_EXPECT_PID = Counter(r[1] for r in _RECORDS)
_EXPECT_ROUTE = Counter(r[3] for r in _RECORDS)
_EXPECT_ERR = Counter(r[3] for r in _RECORDS if r[2] >= 500)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(_DATA)), min_size=0, max_size=40))
def test_counts_add_up_exactly_for_any_chunk_boundaries(cuts: list[int]) -> None:
    bounds = [0, *sorted(set(cuts)), len(_DATA)]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "access.log"
        ing = AccessLogIngest(path, latency_sample_max=64)
        per_pid: Counter[int] = Counter()
        for a, b in itertools.pairwise(bounds):
            append(path, _DATA[a:b])
            batch = ing.poll()
            per_pid.update(batch.by_pid)
            assert batch.latencies.size <= 64
        ing.close()
    tot = ing.totals
    assert tot.unparseable == 0
    assert tot.lines == N_LINES
    assert sum(tot.by_pid.values()) == N_LINES
    assert tot.by_pid == dict(_EXPECT_PID) == dict(per_pid)
    assert tot.by_route == dict(_EXPECT_ROUTE)
    assert tot.errors_by_route == dict(_EXPECT_ERR)
    assert sum(tot.by_status.values()) == N_LINES
    assert sum(n for (_pid, _c), n in tot.by_pid_status.items()) == N_LINES


def test_429_is_counted_as_rate_limited_not_as_an_error() -> None:
    from stackpanel.core.metrics.ingest import parse_chunk

    data = b"".join([b"10 200 0.001 app - GET \"/\"\n", b"10 429 0.000 app - GET \"/\"\n",
                     b"10 429 0.000 app - GET \"/\"\n", b"11 503 0.002 app - GET \"/\"\n"])
    batch = parse_chunk(data)
    assert batch.limited_by_route == {"app": 2} and batch.errors_by_route == {"app": 1}
    assert batch.by_status == {"2xx": 1, "4xx": 2, "5xx": 1}
