"""Publishing a run's files all at once, idempotently, and one run per date at a time."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import publish
from pipeline.errors import BusyError
from pipeline.paths import Paths

AS_OF = dt.date(2026, 6, 1)


def _stage(root: Path, files: dict[str, str]) -> Path:
    staging = publish.new_staging(root, AS_OF)
    for name, text in files.items():
        (staging / name).write_text(text)
    return staging


def _read(d: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted(d.iterdir())}


def test_publish_points_the_date_at_a_complete_directory_with_a_manifest(tmp_path: Path) -> None:
    target = tmp_path / AS_OF.isoformat()
    final = publish.publish(_stage(tmp_path, {"a.csv": "x\n1\n", "b.json": "{}"}), target, {"as_of": "2026-06-01"})
    assert target.is_symlink() and target.resolve() == final.resolve()
    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["as_of"] == "2026-06-01"
    assert manifest["files"]["a.csv"] == {"sha256": publish.sha256_file(target / "a.csv"), "bytes": 4}
    assert set(manifest["files"]) == {"a.csv", "b.json"}
    assert not list(tmp_path.glob(".staging-*"))


def test_the_same_content_again_is_the_same_directory_byte_for_byte(tmp_path: Path) -> None:
    target = tmp_path / AS_OF.isoformat()
    first = publish.publish(_stage(tmp_path, {"a.csv": "1"}), target, {"k": 1})
    before = _read(target)
    second = publish.publish(_stage(tmp_path, {"a.csv": "1"}), target, {"k": 1})
    assert first == second and _read(target) == before


def test_new_content_replaces_the_link_keeps_the_previous_run_and_drops_older_ones(tmp_path: Path) -> None:
    target = tmp_path / AS_OF.isoformat()
    runs = [publish.publish(_stage(tmp_path, {"a.csv": str(i)}), target, {"run": i}) for i in range(3)]
    assert (target / "a.csv").read_text() == "2"
    assert not runs[0].exists() and runs[1].exists() and runs[2].exists()


def test_a_directory_published_before_links_is_moved_aside_not_lost(tmp_path: Path) -> None:
    target = tmp_path / AS_OF.isoformat()
    target.mkdir()
    (target / "a.csv").write_text("old")
    publish.publish(_stage(tmp_path, {"a.csv": "new"}), target, {})
    assert (target / "a.csv").read_text() == "new"
    kept = list((tmp_path / publish.PUBLISHED).glob("*.unmanaged-*"))
    assert len(kept) == 1 and (kept[0] / "a.csv").read_text() == "old"


def test_stale_staging_of_a_killed_run_is_removed_and_never_taken_for_a_list(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    root = paths.lists_root
    stale = root / f"{publish.STAGING_PREFIX}{AS_OF.isoformat()}-99999"
    stale.mkdir(parents=True)
    (stale / "winback.parquet").write_text("half")
    assert paths.previous_list(AS_OF + dt.timedelta(days=7)) is None  # not a list, although it has the file
    assert publish.remove_stale_staging(root, AS_OF) == [stale] and not stale.exists()


def test_a_second_run_for_the_same_date_is_refused_while_the_first_holds_the_lock(tmp_path: Path) -> None:
    with publish.exclusive_run(tmp_path, AS_OF):
        busy = pytest.raises(BusyError, match=f"another run is scoring {AS_OF}.*pid")
        with busy, publish.exclusive_run(tmp_path, AS_OF):
            pass
        # another date is not blocked
        with publish.exclusive_run(tmp_path, AS_OF + dt.timedelta(days=1)):
            pass
    with publish.exclusive_run(tmp_path, AS_OF):  # released on exit
        pass


def test_the_lock_dies_with_its_process(tmp_path: Path) -> None:
    code = (
        "import datetime as dt, os, sys; from pathlib import Path; from pipeline import publish\n"
        f"cm = publish.exclusive_run(Path({str(tmp_path)!r}), dt.date(2026, 6, 1)); cm.__enter__()\n"
        "print('locked', flush=True); os._exit(0)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.stdout.strip() == "locked", res.stderr
    with publish.exclusive_run(tmp_path, AS_OF):  # no stale lock after the holder died without cleanup
        pass


def test_run_log_appends_who_when_and_what(tmp_path: Path) -> None:
    publish.log_run(tmp_path, {"as_of": "2026-06-01", "published": "x"})
    publish.log_run(tmp_path, {"as_of": "2026-06-08", "error": "drift"})
    lines = [json.loads(x) for x in (tmp_path / publish.RUN_LOG).read_text().splitlines()]
    assert [x["as_of"] for x in lines] == ["2026-06-01", "2026-06-08"]
    assert {"at", "user", "host"} <= set(lines[0])
