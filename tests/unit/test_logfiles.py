from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

import stackpanel.core.supervise.logfiles as lf
from stackpanel.core.supervise.logfiles import LogRotator, rotate_file, tail_lines
from stackpanel.core.supervise.process import ManagedProcess


def test_tail_small_file(tmp_path: Path) -> None:
    f = tmp_path / "a.log"
    f.write_bytes(b"one\ntwo\r\nthree\n")
    assert tail_lines(f, 2) == ["two", "three"]
    assert tail_lines(f, 10) == ["one", "two", "three"]
    assert tail_lines(f, 0) == []


def test_tail_missing_and_empty(tmp_path: Path) -> None:
    assert tail_lines(tmp_path / "nope.log", 5) == []
    (tmp_path / "empty.log").write_bytes(b"")
    assert tail_lines(tmp_path / "empty.log", 5) == []


def test_tail_partial_last_line_and_bad_bytes(tmp_path: Path) -> None:
    f = tmp_path / "p.log"
    f.write_bytes(b"ok line\nbad \xff\xfe bytes\nhalf-writ")
    assert tail_lines(f, 2) == ["bad \ufffd\ufffd bytes", "half-writ"]
    # A multi-byte character cut in the middle is replaced, not an error.
    f.write_bytes("first\nzürich".encode()[:-5])
    assert tail_lines(f, 5) == ["first", "z\ufffd"]


def test_tail_big_file_reads_only_the_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "big.log"
    with open(f, "wb") as out:
        out.writelines(b"line %06d %s\n" % (i, b"x" * 20) for i in range(400_000))
    assert f.stat().st_size > 10_000_000

    read_bytes = 0
    real_pread = lf.os.pread

    def counting_pread(fd: int, n: int, off: int) -> bytes:
        nonlocal read_bytes
        data = real_pread(fd, n, off)
        read_bytes += len(data)
        return data

    monkeypatch.setattr(lf.os, "pread", counting_pread)
    lines = tail_lines(f, 3)
    assert lines == [f"line {i:06d} {'x' * 20}" for i in (399_997, 399_998, 399_999)]
    assert read_bytes <= 128 * 1024
    assert len(tail_lines(f, 5000)) == 5000
    assert tail_lines(f, 5000)[0].startswith("line 395000 ")


def test_tail_line_longer_than_chunk(tmp_path: Path) -> None:
    f = tmp_path / "long.log"
    long = "y" * 200_000
    f.write_text(f"a\n{long}\nb\n")
    assert tail_lines(f, 2) == [long, "b"]
    assert tail_lines(f, 3) == ["a", long, "b"]


def test_rotate_file_keeps_newest_lines_at_line_boundary(tmp_path: Path) -> None:
    f = tmp_path / "r.log"
    f.write_bytes(b"".join(b"%04d\n" % i for i in range(1000)))  # 5000 bytes
    size = rotate_file(f, keep_bytes=1003)
    assert size == 5000
    assert f.stat().st_size == 0
    backup = (tmp_path / "r.log.1").read_bytes()
    assert backup.startswith(b"0800\n") and backup.endswith(b"0999\n")
    assert len(backup) == 1000


def test_rotator_skips_small_and_missing(tmp_path: Path) -> None:
    rot = LogRotator(max_bytes=100)
    small = tmp_path / "small.log"
    small.write_text("x\n")
    rot.add_all([small, tmp_path / "missing.log"])
    assert rot.check() == []
    assert small.read_text() == "x\n"


@pytest.mark.integration
def test_rotation_bounds_file_while_child_appends(tmp_path: Path) -> None:
    log_path = tmp_path / "child.log"
    code = (
        "import sys, time\n"
        "for i in range(20000):\n"
        "    sys.stdout.write('line %06d %s\\n' % (i, 'z' * 50)); sys.stdout.flush()\n"
        "    if i % 50 == 0: time.sleep(0.001)\n"
        "print('DONE', flush=True)\n"
    )
    max_bytes = 64 * 1024
    rot = LogRotator(max_bytes=max_bytes)
    rot.add(log_path)
    p = ManagedProcess.start("writer", [sys.executable, "-c", code], log_path=log_path)
    peak = 0
    rotations = 0
    try:
        while p.is_running:
            rotations += len(rot.check())
            peak = max(peak, log_path.stat().st_size)
            time.sleep(0.005)
        assert p.wait(10) == 0
    finally:
        p.stop(timeout=0.5)
    rotations += len(rot.check())
    total = 20000 * 62
    assert rotations >= 3, "the file never grew past the limit: the test proves nothing"
    # Bounded: never far above the limit (a check interval's worth of writes at most).
    assert peak < 8 * max_bytes < total
    assert log_path.stat().st_size <= max_bytes
    backup = tmp_path / "child.log.1"
    assert backup.stat().st_size <= max_bytes
    # The child kept writing at the new end (O_APPEND): no hole of NUL bytes after truncation.
    content = log_path.read_bytes()
    assert b"\0" not in content
    # The last line is in the live file, or in the backup if the final check rotated it.
    assert (tail_lines(log_path, 1) or tail_lines(backup, 1)) == ["DONE"]
    assert all(ln.startswith(("line ", "DONE")) for ln in tail_lines(backup, 50))
