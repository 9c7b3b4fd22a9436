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
