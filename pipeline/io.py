"""Atomic file outputs: write beside the target, fsync, then rename over it."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `target`; it replaces `target` only if the block succeeds."""
    with atomic_paths(target) as (tmp,), _naming(Path(target)):
        yield tmp


@contextmanager
def atomic_paths(*targets: str | Path) -> Iterator[list[Path]]:
    """Yield a temporary path next to each target; they replace the targets together, only if the block succeeds.

    Every file is written and synced before the first one replaces its target, so a failure while writing
    any of them (a bad input found late, a full disk) leaves every previous target as it was. A temporary
    path keeps its target's suffix, for writers that choose a format by name.
    """
    paths = [Path(t) for t in targets]
    tmps: list[Path] = []
    made: list[Path] = []  # directories created here: removed again (if empty) when the block fails
    done = False
    try:
        for target in paths:
            made += [d for d in reversed(target.parent.absolute().parents) if not d.exists()]
            made += [target.parent.absolute()] if not target.parent.exists() else []
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}", dir=target.parent)
            os.close(fd)
            tmps.append(Path(tmp))
            # mkstemp creates 0600; published files get the usual permissions of the process umask
            os.chmod(tmp, 0o666 & ~_umask())
        try:
            yield tmps
        except OSError as exc:  # a writer's error names a temporary path: name its output instead
            names = {str(tmp): target for target, tmp in zip(paths, tmps, strict=True)}
            target = names.get(str(exc.filename))
            if target is None:
                raise
            raise OSError(exc.errno, exc.strerror or str(exc), str(target)) from exc
        for target, tmp in zip(paths, tmps, strict=True):
            with _naming(target), open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        for target, tmp in zip(paths, tmps, strict=True):
            with _naming(target):
                os.replace(tmp, target)
        done = True
    finally:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)
        for d in [] if done else reversed(made):
            with contextlib.suppress(OSError):  # not empty: something else wrote there meanwhile
                d.rmdir()


@contextmanager
def _naming(target: Path) -> Iterator[None]:
    """Name `target` in an OSError raised without a file name (pyarrow's writers raise such errors)."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None:
            raise OSError(exc.errno, exc.strerror or str(exc), str(target)) from exc
        raise


def _write(target: str | Path, writer: Callable[[Path], None]) -> Path:
    with atomic_path(target) as tmp:
        writer(tmp)
    return Path(target)


def write_parquet(df: pd.DataFrame, target: str | Path) -> Path:
    """Write a DataFrame to Parquet atomically (no index)."""
    return _write(target, lambda p: df.to_parquet(p, index=False))


def write_csv(df: pd.DataFrame, target: str | Path) -> Path:
    """Write a DataFrame to CSV atomically (no index)."""
    return _write(target, lambda p: df.to_csv(p, index=False))


def write_json(obj: Any, target: str | Path) -> Path:
    """Write JSON atomically, keys sorted so identical content gives identical bytes."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"
    return _write(target, lambda p: p.write_text(text))


def write_text(text: str, target: str | Path) -> Path:
    """Write a text file atomically."""
    return _write(target, lambda p: p.write_text(text))
