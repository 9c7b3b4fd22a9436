"""Where benchmark results go: a marked section of docs/benchmarks.md, with their provenance."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"


def provenance() -> str:
    """Today's date, the commit (marked when the tree has local changes), the machine and Python."""
    git = ["git", "-C", str(REPO)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    if subprocess.run([*git, "diff", "--quiet", "HEAD"]).returncode:
        commit += " + local changes"
    machine = f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores".replace("  ", " ")
    return f"{dt.date.today().isoformat()} · commit {commit} · {machine} · Python {platform.python_version()}"


def write_section(name: str, block: str) -> Path:
    """Replace (or append) the text between `<!-- name:start -->` and `<!-- name:end -->`."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    if start in text:
        text = text[: text.index(start)] + f"{start}\n{block}{end}" + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip() + f"\n\n{start}\n{block}{end}\n"
    DOC.write_text(text)
    print(f"written: {DOC}")
    return DOC
