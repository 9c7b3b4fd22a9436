"""Atomic file outputs: write beside the target, fsync, then rename over it."""

from __future__ import annotations

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
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600; published files get the usual permissions of the process umask
    os.chmod(tmp_path, 0o666 & ~_umask())
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    except OSError as exc:
        if exc.filename is None:  # writers like pyarrow's raise without a file name: say which output failed
            raise OSError(exc.errno, exc.strerror or str(exc), str(target)) from exc
        raise
    finally:
        tmp_path.unlink(missing_ok=True)


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
