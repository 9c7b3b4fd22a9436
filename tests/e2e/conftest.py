"""The whole pipeline run once through real DVC, shared by every e2e module that asks for `project`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from dvc_project import build_project


@pytest.fixture(scope="session")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the project (code, dvc.yaml, small params) where `dvc repro` has run once.

    Session scope, not module scope: a module-scoped fixture is built again for every module that uses it, and
    each build is a full pipeline run.
    """
    return build_project(tmp_path_factory.mktemp("project"))


@pytest.fixture
def copy(project: Path, tmp_path: Path) -> Path:
    """A copy of the built project for a test that changes it (its MLflow store reads the original's artifacts)."""
    dst = tmp_path / "copy"
    shutil.copytree(project, dst, symlinks=True, ignore=shutil.ignore_patterns(".dvc"))
    return dst
