from __future__ import annotations

from pathlib import Path

import pytest

import stackpanel.core.supervise.logfiles as lf
from stackpanel.core.supervise.logfiles import LogRotator, rotate_file, tail_lines


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


