"""Publish a scoring run's outputs all at once, or not at all, and one run per date at a time.

A run writes its files into a staging directory beside the published ones. Publishing computes a
manifest (hashes of the inputs, params, model and every file), moves the staging directory to
`.published/<as_of>.<manifest hash>` and then flips the symlink `<as_of>` to it with one atomic
rename. A reader therefore sees either the previous run's complete set of files or the new one's,
never a mix. A run killed at any point (SIGKILL included) leaves at most a stale staging directory,
which the next run removes, and the previous list intact.

Runs for the same date are exclusive through an advisory lock (flock) that the kernel releases when
the process dies, so a crashed run never leaves a stale lock. Re-running a date with the same code,
data, params and model reproduces the same manifest hash: the published directory is the same, with
byte-identical files. Nothing published carries a timestamp for that reason; when and by whom a run
ran goes to the run log (`runs.jsonl`) instead.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import getpass
import hashlib
import json
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.errors import BusyError

MANIFEST = "manifest.json"
PUBLISHED = ".published"
STAGING_PREFIX = ".staging-"
RUN_LOG = "runs.jsonl"
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_inputs(path: Path) -> str | None:
    """SHA-256 of a file, or of a directory's files (relative names and contents, in name order); None if absent."""
    if not path.exists():
        return None
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(path).as_posix()}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and fixed separators: equal content gives equal bytes."""
    return json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"


@contextlib.contextmanager
def exclusive_run(lists_root: Path, as_of: dt.date) -> Iterator[Path]:
    """Hold the lock for scoring `as_of`; a second run for the same date fails at once with BusyError."""
    lists_root.mkdir(parents=True, exist_ok=True)
    lock_path = lists_root / f".{as_of.isoformat()}.lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                raise
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise BusyError(
                f"another run is scoring {as_of} ({holder}; lock {lock_path}): nothing was written. "
                "Wait for it to finish, then run again if its list is not the one you want"
            ) from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        yield lock_path
    finally:
        os.close(fd)  # closing releases the lock; the lock file stays (removing it would race another run)


def remove_stale_staging(lists_root: Path, as_of: dt.date) -> list[Path]:
    """Delete staging directories left for `as_of` by killed runs (call with the date's lock held)."""
    stale = sorted(lists_root.glob(f"{STAGING_PREFIX}{as_of.isoformat()}-*"))
    for d in stale:
        shutil.rmtree(d, ignore_errors=True)
    return stale


def new_staging(lists_root: Path, as_of: dt.date) -> Path:
    """An empty staging directory for one run for `as_of` (under the lock)."""
    d = lists_root / f"{STAGING_PREFIX}{as_of.isoformat()}-{os.getpid()}"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    return d


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_hashes(directory: Path) -> dict[str, dict[str, Any]]:
    """{name: {sha256, bytes}} of every file directly in `directory` except the manifest."""
    return {
        f.name: {"sha256": sha256_file(f), "bytes": f.stat().st_size}
        for f in sorted(directory.iterdir())
        if f.is_file() and f.name != MANIFEST
    }


def publish(staging: Path, target: Path, manifest: dict[str, Any]) -> Path:
    """Write the manifest into `staging`, move it under .published/ and point the `target` symlink at it.

    `manifest` gets a `files` section (hash and size of every staged file). The published directory
    is named after the manifest's hash: publishing identical content again reuses it unchanged.
    Returns the published directory.
    """
    manifest = {**manifest, "files": file_hashes(staging)}
    text = canonical_json(manifest)
    (staging / MANIFEST).write_text(text)
    for f in staging.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    _fsync_dir(staging)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    store = target.parent / PUBLISHED
    store.mkdir(exist_ok=True)
    final = store / f"{target.name}.{digest}"
    if final.exists() and (final / MANIFEST).exists() and (final / MANIFEST).read_text() == text:
        shutil.rmtree(staging)  # the same run again: its files are already published, byte for byte
    else:
        shutil.rmtree(final, ignore_errors=True)  # an incomplete copy from a killed run
        os.rename(staging, final)
        _fsync_dir(store)
    _point(target, final)
    return final


def _point(target: Path, final: Path) -> None:
    """Make `target` a symlink to `final` with one atomic rename; a real directory there is moved aside first."""
    previous = target.resolve() if target.is_symlink() else None
    if target.exists() and not target.is_symlink():
        # a list published before symlinks (or by hand): keep it under .published/, never delete it
        aside = final.parent / f"{target.name}.unmanaged-{os.getpid()}"
        os.rename(target, aside)
    link = target.parent / f".{target.name}.link-{os.getpid()}"
    link.unlink(missing_ok=True)
    os.symlink(os.path.relpath(final, target.parent), link)
    os.replace(link, target)
    _fsync_dir(target.parent)
    # keep the run just replaced (a reader may still be in it, and it is the one to compare with);
    # older ones for this date go
    keep = {final.resolve(), previous}
    for d in final.parent.glob(f"{target.name}.*"):
        if len(d.suffix) == 17 and d.resolve() not in keep:  # <date>.<16 hex digits>: a run, not a kept one
            shutil.rmtree(d, ignore_errors=True)


def log_run(lists_root: Path, entry: dict[str, Any]) -> None:
    """Append one line to the run log: when, who, what was published or why not."""
    line = {
        "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "user": getpass.getuser(),
        "host": socket.gethostname(),
        **entry,
    }
    lists_root.mkdir(parents=True, exist_ok=True)
    with open(lists_root / RUN_LOG, "a") as fh:
        fh.write(json.dumps(line, sort_keys=True, default=str) + "\n")
