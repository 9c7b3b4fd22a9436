"""Weekly scoring runs as cron runs them: killed mid-write, overlapping, re-run for the same date.

Each test works on its own copy of the project that `dvc repro` built (`copy`, conftest.py), so the
shared project's latest list is never moved.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from dvc_project import project_env, run_ok

from pipeline.errors import ExitCode
from pipeline.publish import MANIFEST, STAGING_PREFIX, sha256_file

pytestmark = pytest.mark.e2e

DATE = "2026-06-01"


def _score(copy: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        ["bin/winback", "score", "--as-of", DATE, *extra],
        cwd=copy,
        env=project_env(copy),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _files(d: Path) -> dict[str, str]:
    return {f.name: sha256_file(f) for f in sorted(d.iterdir()) if f.is_file()}


def _kill_when(copy: Path, name: str) -> None:
    """Start a run and SIGKILL it as soon as `name` exists in its staging directory."""
    proc = _score(copy)
    lists = copy / "outputs" / "winback"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if any((d / name).exists() for d in lists.glob(f"{STAGING_PREFIX}{DATE}-*")):
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.002)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the run was not killed mid-write (exit {proc.returncode})"


def test_a_run_killed_at_any_point_of_writing_leaves_the_previous_list(copy: Path) -> None:
    run_ok(["bin/winback", "score", "--as-of", DATE], copy)
    published = copy / "outputs" / "winback" / DATE
    before = _files(published)
    assert set(before) >= {"winback.csv", "winback.parquet", "summary.json", "features.parquet", MANIFEST}
    for name in ("features.parquet", "winback.csv", "summary.json"):
        _kill_when(copy, name)
        assert _files(published) == before, f"killed after writing {name}: the published list changed"
    # the next run clears what the killed ones left and publishes the same bytes again
    run_ok(["bin/winback", "score", "--as-of", DATE], copy)
    assert not list((copy / "outputs" / "winback").glob(f"{STAGING_PREFIX}*"))
    assert _files(published) == before


def test_two_runs_for_one_date_one_publishes_the_other_exits_busy(copy: Path) -> None:
    lists = copy / "outputs" / "winback"
    lists.mkdir(parents=True, exist_ok=True)
    # a run in progress holds the date's lock (as `winback score` does while it scores)
    fd = os.open(lists / f".{DATE}.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.pwrite(fd, b"pid 4242 on cron-host", 0)
    try:
        proc = _score(copy)
        out, err = proc.communicate(timeout=600)
    finally:
        os.close(fd)
    assert proc.returncode == ExitCode.BUSY, out + err
    text = " ".join((out + err).split())
    assert f"another run is scoring {DATE}" in text and "pid 4242" in text
    assert not (lists / DATE).exists()
    refused = json.loads((lists / "runs.jsonl").read_text().splitlines()[-1])
    assert refused["as_of"] == DATE and refused["exit_code"] == ExitCode.BUSY
    # truly concurrent: whichever takes the lock first publishes; the other is refused or publishes the same
    procs = [_score(copy), _score(copy)]
    codes = sorted(p.wait(timeout=900) for p in procs)
    assert codes[0] == 0 and codes[1] in (0, ExitCode.BUSY), codes
    manifest = json.loads((lists / DATE / MANIFEST).read_text())
    assert manifest["as_of"] == DATE and manifest["forced"] is None


def test_rerunning_a_date_gives_byte_identical_files_and_a_manifest_of_inputs(copy: Path) -> None:
    run_ok(["bin/winback", "score", "--as-of", DATE], copy)
    published = copy / "outputs" / "winback" / DATE
    first, target = _files(published), published.resolve()
    run_ok(["bin/winback", "score", "--as-of", DATE], copy)
    assert _files(published) == first and published.resolve() == target
    manifest = json.loads((published / MANIFEST).read_text())
    assert manifest["inputs"]["events_sha256"] == sha256_file(copy / "data" / "ingested" / "events.parquet")
    assert manifest["model"]["version"] and len(manifest["params_sha256"]) == 64
    assert {k: v["sha256"] for k, v in manifest["files"].items()} == {k: v for k, v in first.items() if k != MANIFEST}
    log = [json.loads(x) for x in (copy / "outputs" / "winback" / "runs.jsonl").read_text().splitlines()]
    assert [x["as_of"] for x in log][-2:] == [DATE, DATE]
    assert dt.datetime.fromisoformat(log[-1]["at"]).tzinfo is not None


def test_a_guard_refuses_to_publish_until_forced_with_a_reason(copy: Path) -> None:
    params = yaml.safe_load((copy / "params.yaml").read_text())
    params["score"]["guards"] = {"max_population_change": 0.5, "max_score_psi": 1e-6, "max_feature_psi": 5.0}
    (copy / "strict.yaml").write_text(yaml.safe_dump(params))
    lists = copy / "outputs" / "winback"
    refused = _score(copy, "--params", "strict.yaml")
    out, err = refused.communicate(timeout=900)
    assert refused.returncode == ExitCode.GUARD, out + err
    text = " ".join((out + err).split())
    assert "nothing published" in text and "max_score_psi" in text and "--force" in text
    assert not (lists / DATE).exists()
    log = [json.loads(x) for x in (lists / "runs.jsonl").read_text().splitlines()]
    assert log[-1]["exit_code"] == ExitCode.GUARD and "max_score_psi" in log[-1]["error"]
    empty = _score(copy, "--params", "strict.yaml", "--force", " ")
    assert empty.wait(timeout=300) == ExitCode.CONFIG
    reason = "new tracking plan, drift checked by hand"
    run_ok(["bin/winback", "score", "--as-of", DATE, "--params", "strict.yaml", "--force", reason], copy)
    assert json.loads((lists / DATE / MANIFEST).read_text())["forced"] == reason
    guards = json.loads((lists / DATE / "summary.json").read_text())["guards"]
    assert guards["forced"] == reason and "max_score_psi" in guards["failed"][0]
    drift = guards["drift"]
    assert drift["available"] and drift["score_psi"] > 1e-6 and len(drift["feature_psi"]) > 20
    psi = [r["psi"] for r in drift["feature_psi"]]
    assert psi == sorted(psi, reverse=True)  # the most drifted first, also after summary.json's sorted keys


def test_realised_churn_of_past_lists_is_reported_once_their_horizon_passed(copy: Path) -> None:
    run_ok(["bin/winback", "score", "--as-of", "2026-04-01"], copy)  # horizon 60 days: matured by 2026-07-01
    run_ok(["bin/winback", "score", "--as-of", "2026-06-20"], copy)  # not matured
    run_ok(["bin/winback", "score"], copy)
    latest = json.loads((copy / "outputs" / "latest.json").read_text())
    summary = json.loads((copy / "outputs" / "winback" / latest["as_of"] / "summary.json").read_text())
    (past,) = summary["calibration_drift"]
    assert past["as_of"] == "2026-04-01" and past["all"]["users"] > 100 and past["holdout"]["users"] > 5
    assert 0 <= past["holdout"]["ece"] <= 1 and 0 < past["all"]["observed_rate"] < 1
    assert summary["guards"]["population"]["previous_as_of"] == "2026-06-20"
