"""Atomic outputs: a failed write never replaces or half-writes the previous file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pandas as pd
import pytest

from pipeline import io


def test_failed_write_keeps_the_previous_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "out" / "list.csv"
    io.write_csv(pd.DataFrame({"a": [1, 2]}), target)
    before = target.read_bytes()
    with pytest.raises(RuntimeError), io.atomic_path(target) as tmp:
        tmp.write_text("half a file")
        raise RuntimeError("disk full")
    assert target.read_bytes() == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["list.csv"]


def test_json_is_byte_identical_for_equal_content_and_readable_by_others(tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    io.write_json({"b": 1, "a": [1, 2]}, a)
    io.write_json({"a": [1, 2], "b": 1}, b)
    assert a.read_bytes() == b.read_bytes()
    old = os.umask(0o022)
    try:
        io.write_text("x", tmp_path / "c.txt")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "c.txt").stat().st_mode) == 0o644


def test_a_set_of_outputs_is_replaced_together_or_not_at_all(tmp_path: Path) -> None:
    first, second = tmp_path / "events.parquet", tmp_path / "sub" / "rejects.csv"
    io.write_text("old events", first)
    io.write_text("old rejects", second)
    with pytest.raises(RuntimeError), io.atomic_paths(first, second) as (a, b):
        assert a.suffix == ".parquet" and b.suffix == ".csv"  # writers that pick a format by name still can
        io.write_text("new events", a)
        raise RuntimeError("disk full")  # while the second output is being written
    assert first.read_text() == "old events" and second.read_text() == "old rejects"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["events.parquet", "rejects.csv", "sub"]
    with io.atomic_paths(first, second) as (a, b):
        io.write_text("new events", a)
        io.write_text("new rejects", b)
    assert first.read_text() == "new events" and second.read_text() == "new rejects"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["events.parquet", "rejects.csv", "sub"]


def test_a_failed_write_names_the_output_not_its_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "events.parquet"
    # a writer inside the set writes atomically itself: its error names the set's temporary path
    with pytest.raises(OSError) as err, io.atomic_paths(target) as (tmp,), io.atomic_path(tmp):
        raise OSError(28, "No space left on device")
    assert err.value.filename == str(target) and err.value.errno == 28
    assert list(tmp_path.iterdir()) == []
