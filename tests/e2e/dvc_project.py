"""Build a copy of the project where `dvc repro` has run once; shared by the e2e tests through conftest.py."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def project_env(workdir: Path) -> dict[str, str]:
    env = dict(os.environ)
    # the stages call the `winback` console script of the interpreter running the tests
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{workdir / 'mlflow.db'}"
    env["DVC_NO_ANALYTICS"] = "1"
    return env


def assert_campaign_explained(lst) -> None:
    """Reasons cover a top-rank prefix holding every selected user (score.reasons_for: contact_list)."""
    explained = lst["reason_1"].notna()
    assert explained.iloc[: min(len(lst), 1000)].all() and explained[lst["selected"]].all()
    assert explained.tolist() == sorted(explained, reverse=True)
    assert (lst.loc[explained, "reason_1"].str.len() > 0).all()


def run_ok(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    res = subprocess.run(args, cwd=cwd, env=project_env(cwd), capture_output=True, text=True, timeout=1200)
    assert res.returncode == 0, f"{' '.join(args)} failed:\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
    return res


def build_project(work: Path) -> Path:
    """Copy code, dvc.yaml and small params into `work`, then `dvc init` and `dvc repro` there."""
    for name in ("features", "pipeline"):
        shutil.copytree(REPO / name, work / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", work / "dvc.yaml")
    shutil.copytree(REPO / "bin", work / "bin")
    text = (REPO / "params.yaml").read_text()
    assert "users: 5000" in text
    (work / "params.yaml").write_text(text.replace("users: 5000", "users: 2500"))
    dvc = str(Path(sys.executable).parent / "dvc")
    run_ok([dvc, "init", "--no-scm", "-q"], work)
    run_ok([dvc, "repro"], work)
    return work


def run_winback_config(
    config: str | Path, out: Path, cwd: Path, env: dict[str, str] | None = None, timeout: int = 1800
) -> subprocess.CompletedProcess:
    """`winback run --config CONFIG --out OUT` with this interpreter's scripts and a store under OUT; must succeed."""
    full = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    full.pop("MLFLOW_TRACKING_URI", None)  # the run keeps its sqlite store under OUT
    full.update(env or {})
    res = subprocess.run(
        ["winback", "run", "--config", str(config), "--out", str(out)],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res
