from __future__ import annotations

import os
from pathlib import Path

import pytest

from stackpanel.core.supervise.runrecord import (
    RecordedProcess,
    RunRecord,
    RunRecordError,
    clean_leftovers,
    find_leftovers,
    read_record,
    record_path,
)


def test_record_roundtrip_and_atomic_write(tmp_path: Path) -> None:
    rec = RunRecord(tmp_path)
    rec.add(RecordedProcess("nginx", 111, 1.5, ("nginx", "-c", "x"), 111))
    rec.add(RecordedProcess("uvicorn", 222, 2.5, ("uvicorn",), 222))
    rec.remove(111)
    data = read_record(record_path(tmp_path))
    assert data is not None
    assert data.owner_pid == os.getpid()
    assert data.processes == (RecordedProcess("uvicorn", 222, 2.5, ("uvicorn",), 222),)
    assert [p.name for p in tmp_path.iterdir()] == ["processes.json"], "no temp files left behind"


def test_missing_and_damaged_record(tmp_path: Path) -> None:
    assert find_leftovers(tmp_path / "processes.json") == []
    (tmp_path / "processes.json").write_text("{not json")
    with pytest.raises(RunRecordError, match="damaged"):
        find_leftovers(tmp_path / "processes.json")


def test_unwritable_run_dir_is_an_actionable_error(tmp_path: Path) -> None:
    rec = RunRecord(tmp_path / "missing")
    with pytest.raises(RunRecordError, match="run directory exists"):
        rec.add(RecordedProcess("x", 1, 1.0, ("x",), 1))


def test_clean_with_nothing_left() -> None:
    assert clean_leftovers([]).summary == "no leftover processes from a previous run"








